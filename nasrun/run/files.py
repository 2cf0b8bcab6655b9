"""Files of a run folder written atomically (temp file + os.replace) and JSON-lines rows that survive a torn last line.

An interrupted or killed run never leaves a half-written file behind; a reader skips a torn last row.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from nasrun.errors import RunFolderError

log = logging.getLogger(__name__)

#: How every refusal to resume ends: the one way out a user always has.
AFRESH = "move it away to start the run afresh"


# What _atomic's mkstemp names its temp files: ".<name>.<random>.tmp" (genotype.save uses the same).
_TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (another thread may create files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way is to set it and put it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through a temp file in its folder, then rename: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 files; colleagues must read results
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically (temp file + rename)."""
    _atomic(Path(path), lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (temp file + rename)."""
    _atomic(Path(path), lambda fh: fh.write(text.encode()))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write an indented JSON document atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save atomically: a kill during the save keeps the previous checkpoint."""
    _atomic(Path(path), lambda fh: torch.save(obj, fh))


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of atomic writes a killed process left in ``folder``; return them.

    Only safe while the folder's lock is held: a live writer's temp file must not be removed.
    """
    removed = []
    for entry in Path(folder).iterdir():
        if _TEMP_FILE.match(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        log.info("%s: removed %d temp file(s) left by an interrupted write", folder, len(removed))
    return removed


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON object as one line (one write call, so a kill tears at most the last line)."""
    path = Path(path)
    with open(path, "a+b") as fh:
        _drop_torn_tail(fh, path)
        fh.write((json.dumps(row) + "\n").encode())


def _drop_torn_tail(fh: IO[bytes], path: Path) -> None:
    """Cut a last line without its newline (a killed append) so the next row starts on its own line."""
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    fh.seek(0)
    data = fh.read()
    keep = data.rfind(b"\n") + 1
    log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted write", path, size - keep)
    fh.truncate(keep)
    fh.seek(0, os.SEEK_END)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a .jsonl file ([] if absent); a torn last line is dropped with a warning.

    Anything else that is not one JSON object per line raises RunFolderError naming the line.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path}: not UTF-8 text ({exc}); {AFRESH}") from None
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]  # tail: what follows the last newline ("" if none)
    rows = [_parse_row(path, number, line, last=not tail and number == len(complete))
            for number, line in enumerate(complete, 1)]
    if tail.strip():
        log.warning("%s: dropping torn line %d (no newline: the writer was interrupted)", path, len(lines))
    return [row for row in rows if row is not None]


def _parse_row(path: Path, number: int, line: str, last: bool) -> dict | None:
    """One line as a JSON object; None for a blank line or an unreadable last line (dropped, with a warning)."""
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        if last:
            log.warning("%s: dropping unreadable last line %d (%s)", path, number, exc.msg)
            return None
        raise RunFolderError(f"{path}: line {number} is not valid JSON ({exc.msg}); {AFRESH}") from None
    if not isinstance(row, dict):
        raise RunFolderError(f"{path}: line {number} holds {kind_of(row)}, expected a JSON object; {AFRESH}")
    return row


def truncate_jsonl(path: Path, before_epoch: int) -> None:
    """Keep only rows of epochs < before_epoch (rows written after the last checkpoint are redone)."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for row in read_jsonl(path):
        epoch = row.get("epoch", -1)
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
            raise RunFolderError(f"{path}: a row has epoch {epoch!r}, expected a number; {AFRESH}")
        if epoch < before_epoch:
            keep.append(row)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))

def kind_of(value: Any) -> str:
    """'a list', 'a Tensor', 'None': how an error message names what it found."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
