"""The run folder: one lifecycle that search and retrain share.

A run folder is the contract with users and with ``nasrun report``. :class:`RunFolder` opens one for
a single process (an advisory lock, so two jobs never write the same folder), resumes it (a
completed result, a validated checkpoint, metrics rows that survive a torn last line) and writes it
(every file atomically: temp file + ``os.replace``, with the umask's permissions), so an interrupted
or killed run never leaves a half-written file behind. Checkpoints are read with
``torch.load(weights_only=True)`` only: a run folder copied from elsewhere cannot execute code.

Its building blocks live beside it: :mod:`nasrun.run.files` (atomic writes, JSON-lines rows),
:mod:`nasrun.run.checkpoint` (reading and checking checkpoints), :mod:`nasrun.run.rng` (random state)
and :mod:`nasrun.run.signals` (SIGINT/SIGTERM); the code that reads run folders (report, pipeline) uses them too.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

import nasrun
from nasrun.errors import RunFolderError
from nasrun.run.checkpoint import (CHECKPOINT, CHECKPOINT_FORMAT, read_checkpoint_file, check_same_config, check_weights_only,
                                   validate_checkpoint)
from nasrun.run.files import (AFRESH, append_jsonl, atomic_torch_save, atomic_write_json, kind_of, read_jsonl,
                              remove_stale_temp_files, truncate_jsonl)

try:  # POSIX only; without it a run folder is not locked (a warning says so)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

RESULT = "result.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"



# --------------------------------------------------------------------------------------------- files


# ---------------------------------------------------------------------------------------------- rows


# -------------------------------------------------------------------------------------------- result


#: What result.json's ``status`` can be.
STATUSES = ("completed", "failed", "interrupted")
_NUMBER = (int, float)
#: The result.json fields nasrun reads back (resume, ``retrain genotype=<folder>``, the command's last line),
#: with their types; each may also be null.
RESULT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "command": str, "reason": str, "config": dict, "final": dict, "genotype": dict, "genotype_source": str,
    "search_run": str, "last_epoch": int, "epochs": int, "seed": int, "test_acc": _NUMBER, "test_error": _NUMBER,
    "test_acc_top5": _NUMBER, "train_acc": _NUMBER, "search_val_acc": _NUMBER, "params": _NUMBER,
    "params_with_auxiliary": _NUMBER, "macs": _NUMBER, "wall_seconds": _NUMBER,
}
#: Largest result.json or saved config read (a result is a few kilobytes; this refuses what no run writes).
_MAX_READ = 64 << 20


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_small_text(path: Path) -> str:
    """A run folder's text file; a pipe, a folder or a huge file is refused (reading a pipe would block)."""
    if not path.is_file():
        raise RunFolderError(f"{path}: not a regular file; {AFRESH}")
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_READ + 1)
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot be read ({exc.strerror or exc}); {AFRESH}") from None
    if len(data) > _MAX_READ:
        raise RunFolderError(f"{path}: larger than {_MAX_READ >> 20} MB, not a file nasrun wrote; {AFRESH}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); {AFRESH}") from None


def check_result(path: Path, result: Any) -> dict:
    """A parsed result.json, refused (one line naming the file and the field) unless nasrun could have written it."""
    if not isinstance(result, dict):
        raise RunFolderError(f"{path}: holds {kind_of(result)}, expected a JSON object; {AFRESH}")
    status = result.get("status")
    if status not in STATUSES:
        what = "is missing" if "status" not in result else f"is {_shown(status)}"
        raise RunFolderError(f"{path}: status {what}, expected one of {', '.join(STATUSES)}; {AFRESH}")
    for key, expected in RESULT_FIELDS.items():
        value = result.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, expected)):
            wanted = "a number" if expected == _NUMBER else {dict: "an object", str: "a string", int: "an integer"}[
                expected]
            raise RunFolderError(f"{path}: {key} is {_shown(value)}, expected {wanted} or null; {AFRESH}")
    if status == "completed" and not (isinstance(result.get("config"), dict) and result["config"]):
        raise RunFolderError(f"{path}: a completed run's result has no config (the object it ran with); {AFRESH}")
    return result


def read_result(folder: Path) -> dict | None:
    """result.json of ``folder`` as a dict, None if there is none; anything nasrun cannot have written is one
    RunFolderError line naming the file and the field."""
    path = Path(folder) / RESULT
    if not os.path.lexists(path):
        return None
    try:
        result = json.loads(_read_small_text(path))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc}); {AFRESH}") from None
    except RecursionError:
        raise RunFolderError(f"{path}: nested too deeply to be a result nasrun wrote; {AFRESH}") from None
    return check_result(path, result)


def read_saved_config(folder: Path, subdir: str | Path = ".hydra") -> dict | None:
    """The config Hydra saved in ``folder/.hydra/config.yaml`` (None without one); a file that is not a
    mapping of config keys is one RunFolderError line naming it."""
    import yaml

    path = Path(folder) / subdir / "config.yaml"
    if not os.path.lexists(path):
        return None
    text = _read_small_text(path)
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise RunFolderError(f"{path}: not valid YAML{at}; it is the config Hydra saved when the run started: "
                             f"{AFRESH}") from None
    except RecursionError:
        raise RunFolderError(f"{path}: nested too deeply to be a saved config; {AFRESH}") from None
    if not isinstance(config, dict) or not config:
        what = "is empty" if config is None or config == {} else f"holds {kind_of(config)}"
        raise RunFolderError(f"{path}: {what}, expected the mapping of config keys Hydra saved when the run "
                             f"started; {AFRESH}")
    return config


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


# ----------------------------------------------------------------------------------------------- RNG


# ------------------------------------------------------------------------------------------- signals


# ------------------------------------------------------------------------------------------- logging


#: The line format of every log file nasrun writes (Hydra's job log format).
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def add_file_log(folder: Path, name: str) -> logging.Handler | None:
    """Log to <folder>/<name> unless Hydra's job logging already does."""
    target = (Path(folder) / name).resolve()
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve() == target:
            return None
    handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


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
        ckpt = validate_checkpoint(path, read_checkpoint_file(path), schema)
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
