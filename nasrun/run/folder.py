"""The run folder: one lifecycle that search and retrain share.

A run folder is the contract with users and with ``nasrun report``. :class:`RunFolder` opens one for
a single process (an advisory lock, so two jobs never write the same folder), resumes it (a
completed result, a validated checkpoint, metrics rows that survive a torn last line) and writes it
(every file atomically: temp file + ``os.replace``, with the umask's permissions), so an interrupted
or killed run never leaves a half-written file behind. Checkpoints are read with
``torch.load(weights_only=True)`` only: a run folder copied from elsewhere cannot execute code.

The module functions (``atomic_write_*``, ``read_jsonl``, ``load_checkpoint`` ...) are the building
blocks :class:`RunFolder` uses; they stay public for the code that reads run folders (report, pipeline).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import random
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import torch

import nasrun
from nasrun.errors import RunFolderError

try:  # POSIX only; without it a run folder is not locked (a warning says so)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
LOCK = ".lock"
CHECKPOINT_FORMAT = "nasrun.checkpoint/1"

# What _atomic's mkstemp names its temp files: ".<name>.<random>.tmp" (genotype.save uses the same).
_TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")
_AFRESH = "move it away to start the run afresh"


# --------------------------------------------------------------------------------------------- files


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


# ---------------------------------------------------------------------------------------------- rows


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
        raise RunFolderError(f"{path}: not UTF-8 text ({exc}); {_AFRESH}") from None
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
        raise RunFolderError(f"{path}: line {number} is not valid JSON ({exc.msg}); {_AFRESH}") from None
    if not isinstance(row, dict):
        raise RunFolderError(f"{path}: line {number} holds {_kind(row)}, expected a JSON object; {_AFRESH}")
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
            raise RunFolderError(f"{path}: a row has epoch {epoch!r}, expected a number; {_AFRESH}")
        if epoch < before_epoch:
            keep.append(row)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


# -------------------------------------------------------------------------------------------- result


def read_result(folder: Path) -> dict | None:
    """result.json of ``folder`` as a dict, None if there is none."""
    path = Path(folder) / RESULT
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc}); {_AFRESH}") from None
    if not isinstance(result, dict):
        raise RunFolderError(f"{path}: holds {_kind(result)}, expected a JSON object; {_AFRESH}")
    return result


def environment(device: torch.device) -> dict:
    """What ran the job: enough to tell two machines' figures apart."""
    env = {
        "nasrun": nasrun.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_result(folder: Path, status: str, **fields: Any) -> dict:
    """Write result.json; status is completed, failed or interrupted (with a reason)."""
    result = {"status": status, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    atomic_write_json(Path(folder) / RESULT, result)
    return result


# ---------------------------------------------------------------------------------------- checkpoint


def load_checkpoint(folder: Path) -> dict | None:
    """checkpoint.pt of ``folder`` (None if absent), read with weights_only=True: it cannot run code."""
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    return _torch_load(path)


def _torch_load(path: Path) -> Any:
    """torch.load(weights_only=True) to the CPU; any failure is one RunFolderError line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or unsafe checkpoint must not be silently ignored
        reason = _first_reason(exc)
        what = "holds objects that are not plain data" if "GLOBAL" in reason else "is damaged or truncated"
        raise RunFolderError(
            f"{path}: cannot be read, it {what} ({type(exc).__name__}: {reason}); {_AFRESH}"
        ) from None


def _first_reason(exc: Exception) -> str:
    """The informative line of torch's long, multi-line load errors (e.g. the blocked GLOBAL)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            reason = line.split("error: ", 1)[-1]
            return reason if len(reason) <= 200 else reason[:200] + "..."
    reason = lines[0] if lines else ("the file ends early" if isinstance(exc, EOFError) else "no detail")
    return reason if len(reason) <= 200 else reason[:200] + "..."


def check_same_config(folder: Path, saved: dict, current: dict) -> None:
    """Refuse to resume a run folder with a different config (it would mix two experiments).

    A key the saved config does not have was added by a later nasrun: it is not a difference, so a
    run started before a new option existed still resumes.
    """
    diffs = sorted(_diff(saved, current))
    if diffs:
        shown = ", ".join(diffs[:5]) + (" ..." if len(diffs) > 5 else "")
        raise RunFolderError(
            f"{folder} holds a run with a different config ({shown}); "
            "choose another hydra.run.dir or use the same overrides to resume"
        )


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in set(a) | set(b):
            if key == "progress" or key not in a:
                continue
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def _kind(value: Any) -> str:
    """'a list', 'a Tensor', 'None': how an error message names what it found."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _type_names(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(t.__name__ for t in types)


def validate_checkpoint(path: Path, ckpt: Any, schema: Mapping[str, type | tuple[type, ...]]) -> dict:
    """Check a loaded checkpoint's structure before anything uses it; one RunFolderError line if wrong."""

    def bad(what: str) -> RunFolderError:
        return RunFolderError(f"{path}: {what}; {_AFRESH}")

    if not isinstance(ckpt, dict):
        raise bad(f"holds {_kind(ckpt)}, expected a dict")
    # A checkpoint without "format" was written by nasrun before the tag existed (same layout):
    # it is accepted when it passes every other check below.
    fmt = ckpt.get("format", CHECKPOINT_FORMAT)
    if fmt != CHECKPOINT_FORMAT:
        raise bad(f"format is {fmt!r}, expected {CHECKPOINT_FORMAT!r} (written by another nasrun version)")
    if "epoch" not in ckpt:
        raise bad("key 'epoch' missing")
    epoch = ckpt["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise bad(f"epoch is {epoch!r}, expected an integer >= 0")
    if "config" not in ckpt:
        raise bad("key 'config' missing")
    if not isinstance(ckpt["config"], dict):
        raise bad(f"config is {_kind(ckpt['config'])}, expected a dict")
    for key, expected in schema.items():
        if key not in ckpt:
            raise bad(f"key {key!r} missing")
        if not isinstance(ckpt[key], expected):
            raise bad(f"key {key!r} is {_kind(ckpt[key])}, expected {_type_names(expected)}")
    return ckpt


# What torch.load(weights_only=True) reads back (checked at save time: an unreadable checkpoint
# would only show when the run resumes, hours later).
_SAFE_LEAVES = (str, bytes, int, float, complex, bool, type(None), torch.Size, torch.dtype, torch.device,
                torch.layout, torch.memory_format)


def check_weights_only(obj: Any, where: str = "state") -> None:
    """Raise TypeError naming the first value that torch.load(weights_only=True) would refuse."""
    if isinstance(obj, torch.Tensor) or type(obj) in _SAFE_LEAVES:
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            check_weights_only(key, f"{where} key")
            check_weights_only(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple, set, frozenset):
        for i, value in enumerate(obj):
            check_weights_only(value, f"{where}[{i}]")
        return
    raise TypeError(f"checkpoint {where} is {type(obj).__module__}.{type(obj).__qualname__}: "
                    "torch.load(weights_only=True) could not read it back; store plain values or tensors")


# ----------------------------------------------------------------------------------------------- RNG


def rng_state(device: torch.device) -> dict:
    """Every RNG a run draws from, as values torch.load(weights_only=True) reads back."""
    import numpy as np

    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *(_plain(v) for v in np_state[2:])],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _plain(value: Any) -> int | float:
    """A numpy scalar as a Python number (numpy types are not weights_only-safe)."""
    return value.item() if hasattr(value, "item") else value


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore :func:`rng_state`'s output; keys a checkpoint lacks (older versions, another device) are skipped."""
    try:
        torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
        if device.type == "cuda" and "cuda" in state:  # dropout draws on the device continue too
            torch.cuda.set_rng_state(state["cuda"].to("cpu", torch.uint8), device)
        if "python" in state:
            version, internal, gauss = state["python"]
            random.setstate((version, tuple(internal), gauss))
        if "numpy" in state:
            import numpy as np

            name, keys, *rest = state["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise RunFolderError(f"the checkpoint's RNG state cannot be restored ({type(exc).__name__}: {exc}); "
                             f"{_AFRESH}") from None


# ------------------------------------------------------------------------------------------- signals


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived during a run (Ctrl-C, Slurm preemption, ``kill``).

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` in the run does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def interrupts() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into :class:`Interrupted` inside the block, so a run can record why it ended.

    Signal handlers can only be set from the main thread; elsewhere this is a no-op. The previous
    handlers come back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for sig in previous:
            signal.signal(sig, _raise_interrupted)
        yield
    finally:
        for sig, handler in previous.items():  # None: set outside Python, cannot be put back exactly
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def exit_status(signum: int) -> int:
    """The shell's exit status for a process ended by ``signum`` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


# ------------------------------------------------------------------------------------------- logging


def add_file_log(folder: Path, name: str) -> logging.Handler | None:
    """Log to <folder>/<name> unless Hydra's job logging already does."""
    target = (Path(folder) / name).resolve()
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve() == target:
            return None
    handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if present else cpu; a cuda device where there is none is a ConfigError."""
    from nasrun.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} is not allowed: no CUDA device is available here (use device=cpu or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's RNGs."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------- run folder


def _make_folder(path: Path) -> None:
    """Create the run folder; a file in the way or a folder we cannot write is one RunFolderError line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunFolderError(f"{path}: is a file, not a folder; choose another hydra.run.dir") from None
    except NotADirectoryError:
        raise RunFolderError(f"{path}: a parent of it is a file, not a folder; choose another hydra.run.dir") from None
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot create the run folder ({exc.strerror or exc})") from None
    if not path.is_dir():
        raise RunFolderError(f"{path}: is not a folder; choose another hydra.run.dir")
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunFolderError(f"{path}: the run folder is not writable by this user")


def _read_pid(fd: int) -> str:
    """The pid the lock's holder wrote (first line), or 'unknown' if it has not written it yet."""
    try:
        text = os.pread(fd, 200, 0).decode("ascii", "replace")
    except OSError:
        return "unknown"
    first = text.split("\n", 1)[0].strip()
    return first if first.isdigit() else "unknown"


def _take_lock(path: Path, command: str) -> int:
    """flock <path>/.lock for this process (the kernel drops it when the process dies); return its fd."""
    lock = path / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise RunFolderError(f"{lock}: cannot open the run folder's lock ({exc.strerror or exc})") from None
    if fcntl is None:  # pragma: no cover - Windows
        log.warning("%s: file locks are not available here; make sure no other run writes this folder", path)
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        who = " (this process)" if pid == str(os.getpid()) else ""
        raise RunFolderError(f"{path} is in use by process {pid}{who}; wait for it to end "
                             "or choose another hydra.run.dir") from None
    except OSError as exc:  # e.g. Lustre mounted without flock: run unlocked rather than not at all
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            os.close(fd)
            raise RunFolderError(f"{lock}: cannot lock the run folder ({exc.strerror or exc})") from None
        log.warning("%s: this file system cannot lock files (%s); make sure no other run writes this folder",
                    path, exc.strerror)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n{command}\n".encode(), 0)
    return fd


class RunFolder:
    """A run folder opened by one process: lock, resume, checkpoints, rows, result.

    ``with RunFolder(out, "search", "search.log") as run:`` locks the folder (a second process gets a
    clear error instead of interleaving its rows), cleans up after a killed predecessor, and gives
    the resume and write operations every command shares.
    """

    #: False for a torchrun rank other than 0, which writes nothing (see :class:`FollowerRunFolder`)
    writes = True

    def __init__(self, path: str | Path, command: str, log_name: str | None = None) -> None:
        self.raw_path = path
        self.path = Path(path)
        self.command = command
        self.log_name = log_name
        self._lock_fd: int | None = None
        self._handler: logging.Handler | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, {self.command!r}, open={self.is_open})"

    @property
    def is_open(self) -> bool:
        return self._lock_fd is not None

    def open(self) -> RunFolder:
        """Create and lock the folder, remove stale temp files, start the file log; return self."""
        if self.is_open:
            return self
        if not str(self.raw_path).strip() or os.path.normpath(str(self.raw_path)) == ".":
            raise RunFolderError(
                f"the run folder is empty ({str(self.raw_path)!r}): set hydra.run.dir to a folder "
                "(refusing to write a run into the current directory)"
            )
        _make_folder(self.path)
        self._lock_fd = _take_lock(self.path, self.command)
        try:
            remove_stale_temp_files(self.path)
            if self.log_name:
                self._handler = add_file_log(self.path, self.log_name)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove the log handler this folder added (only that one) and release the lock."""
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # releases the flock; the file stays (deleting it would race a waiting opener)

    def __enter__(self) -> RunFolder:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- resume

    def completed(self, config: dict) -> dict | None:
        """The previous result if this folder holds a completed run of the same config, else None."""
        previous = self.read_result()
        if previous is None or previous.get("status") != "completed":
            return None
        check_same_config(self.path, previous.get("config", {}), config)
        return previous

    def load_checkpoint(self, config: dict, schema: Mapping[str, type | tuple[type, ...]]) -> dict | None:
        """The validated checkpoint of a run with this config, None if there is none.

        Read with weights_only=True only (a crafted file cannot run code); the format tag, ``epoch``,
        ``config`` and every key of ``schema`` (with its type) are checked before anything uses it.
        """
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        ckpt = validate_checkpoint(path, _torch_load(path), schema)
        check_same_config(self.path, ckpt["config"], config)
        return ckpt

    def save_checkpoint(self, state: dict) -> None:
        """Write checkpoint.pt atomically, tagged with CHECKPOINT_FORMAT; refuse what could not be read back."""
        state = {**state, "format": CHECKPOINT_FORMAT}
        check_weights_only(state)
        atomic_torch_save(state, self.path / CHECKPOINT)

    # -- rows

    def rows(self, name: str) -> list[dict]:
        """The rows of <folder>/<name>; a torn last line is dropped with a warning."""
        return read_jsonl(self.path / name)

    def append(self, name: str, row: dict) -> None:
        """Append one row to <folder>/<name>."""
        append_jsonl(self.path / name, row)

    def truncate(self, name: str, before_epoch: int) -> None:
        """Keep the rows of epochs < before_epoch: those after the checkpoint are redone on resume."""
        truncate_jsonl(self.path / name, before_epoch)

    # -- result

    def write_result(self, status: str, **fields: Any) -> dict:
        """Write result.json (``command`` defaults to this folder's command)."""
        fields.setdefault("command", self.command)
        return write_result(self.path, status, **fields)

    def read_result(self) -> dict | None:
        """result.json as a dict, None if absent; anything but a JSON object is a RunFolderError."""
        return read_result(self.path)


class FollowerRunFolder(RunFolder):
    """The run folder as a torchrun rank other than 0 sees it: its path, and writes that do nothing.

    Rank 0 alone locks and writes the folder (metrics, checkpoints, model, result, log); the other ranks
    run the same loop, so its writes are no-ops here rather than ``if rank == 0`` at every call.
    """

    writes = False

    def open(self) -> RunFolder:
        return self

    def append(self, name: str, row: dict) -> None:
        pass

    def truncate(self, name: str, before_epoch: int) -> None:
        pass

    def save_checkpoint(self, state: dict) -> None:
        pass

    def write_result(self, status: str, **fields: Any) -> dict:
        return {"status": status, **fields}
