"""SIGINT and SIGTERM: one line and the exit status a shell expects, and an exception a run can record.

Torch-free, so the command line installs its handler first thing, before anything heavy is imported
(:func:`exits_on_signal`): a signal while the command starts ends it at once with 143 (or 130) and
one line, never with the default handler's silent death, and marks the job folder if Hydra has made
it. A run installs :func:`interrupts` around its work: there the signal becomes :class:`Interrupted`,
which the run records in its result.json (with the last epoch whose checkpoint is kept) before the
command prints its line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: The run folder's record and lock (the names nasrun.run.folder uses; that module imports torch).
RESULT = "result.json"
LOCK = ".lock"


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived during a run (Ctrl-C, Slurm preemption, ``kill``).

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` in the run does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    if _importing_extensions():
        _deliver_later(signum)
        return
    raise Interrupted(signum)


#: Packages whose compiled initialisation must not see an exception: torch's swallows one raised while
#: it imports numpy (the signal is lost and the run goes on) or aborts the process from C++.
_FRAGILE_IMPORTS = ("torch", "torchvision", "numpy", "scipy", "sklearn")


def _importing_extensions() -> bool:
    """Whether one of :data:`_FRAGILE_IMPORTS` is being imported right now."""
    for name in _FRAGILE_IMPORTS:
        spec = getattr(sys.modules.get(name), "__spec__", None)
        if getattr(spec, "_initializing", False):
            return True
    return False


def _deliver_later(signum: int) -> None:
    """Send the signal again once the import is over, so it is raised where an exception is safe."""
    def wait() -> None:
        while _importing_extensions():
            time.sleep(0.01)
        os.kill(os.getpid(), signum)

    threading.Thread(target=wait, name="nasrun-deferred-signal", daemon=True).start()


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


@contextmanager
def kept_handlers() -> Iterator[None]:
    """Put the SIGTERM and SIGINT handlers back as they were on the way out, whatever :func:`hold` did inside."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS} if main_thread else {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def hold() -> None:
    """Ignore further SIGTERM and SIGINT: the command is saying how it ended and is about to exit."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def signal_of(exc: BaseException) -> int:
    """The signal behind an Interrupted or a KeyboardInterrupt (SIGINT when it does not say)."""
    return getattr(exc, "signum", int(signal.SIGINT))


def job_folder_of(exc: BaseException) -> Path | None:
    """The job folder that existed when ``exc`` was raised (see :func:`_job_folder`), from its traceback."""
    frames = []
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return _job_folder(reversed(frames))


def _job_folder(frames: Iterable[FrameType]) -> Path | None:
    """The job folder a stack (innermost frame first) is working in: the job's own, or the one Hydra's
    ``run_job`` has made but not yet handed to the job (Hydra creates the folder and writes ``.hydra/``
    first, so a signal in between leaves a folder nothing has recorded anything in). Hydra's own error
    report finds ``run_job`` in a traceback the same way."""
    for frame in frames:
        module, name = frame.f_globals.get("__name__", ""), frame.f_code.co_name
        if name == "_run_task" and module == "nasrun.cli.apps":
            folder = frame.f_locals.get("out_dir")
        elif name == "run_job" and module.startswith("hydra."):
            folder = frame.f_locals.get("output_dir")
        else:
            continue
        if isinstance(folder, str):
            return Path(folder)
    return None


def _stack(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def interruption_line(command: str, signum: int, folder: Path | None, rank0: bool = True) -> str:
    """The one line a command interrupted outside its run prints; marks ``folder``'s result.json on the way."""
    name = signal.Signals(signum).name
    where = " before the run started; nothing was recorded" if command in ("search", "retrain", "pipeline") else ""
    if folder is not None and rank0 and record_interrupted(folder, command, signum):
        where = f"; recorded in {folder / RESULT}: rerun the same command to resume"
    return f"nasrun {command or '(no command)'}: interrupted by {name}{where}"


@contextmanager
def exits_on_signal(command: str, rank0: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """SIGTERM and SIGINT end the command at once with one line and 143 / 130, outside a run's own handling.

    Nothing is raised: an exception thrown into arbitrary library code (Hydra composing, OmegaConf
    building the schemas, torch initialising) can be swallowed, turned into another error with a
    traceback, or abort the process. A run folder that exists is marked first; inside a run,
    :func:`interrupts` takes over and the run records itself. The previous handlers come back on exit.
    """
    def stop(signum: int, frame: FrameType | None) -> None:
        hold()
        line = interruption_line(command, signum, _job_folder(_stack(frame)), rank0())
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - the main thread may be inside a write; the line goes out below
                pass
        os.write(2, (line + "\n").encode("utf-8", "replace"))
        os._exit(exit_status(signum))  # nothing half-done is left to clean up: files are written atomically

    with kept_handlers():
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, stop)
        yield


def record_interrupted(folder: str | Path, command: str, signum: int) -> bool:
    """Write result.json "interrupted" into a run folder that has no record yet; True when the folder has one now.

    A folder another process holds (its lock is taken) is left alone; an existing record is kept (a
    completed run stays completed, a run that recorded its own interruption keeps its epoch).
    """
    folder = Path(folder)
    result = folder / RESULT
    if not folder.is_dir():
        return False
    if result.exists():
        return True
    lock = _try_lock(folder / LOCK)
    if lock is False:
        return False
    try:
        name = signal.Signals(signum).name
        record = {"status": "interrupted", "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command,
                  "reason": f"{name}: stopped before the run recorded anything; rerun the same command to resume",
                  "signal": name, "last_epoch": None}
        fd, tmp = tempfile.mkstemp(prefix=f".{RESULT}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as the run's own files (mkstemp makes it 0600)
        os.replace(tmp, result)
        return True
    except OSError:
        return False
    finally:
        if isinstance(lock, int):
            os.close(lock)


def _try_lock(path: Path) -> int | bool | None:
    """The fd of the folder's lock taken without waiting; None when there is no lock file or this process holds
    it; False when another process holds it."""
    if fcntl is None or not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).split(b"\n", 1)[0].strip()
        os.close(fd)
        # this very process, stopped between taking the lock and handing it to its RunFolder
        return None if holder == str(os.getpid()).encode() else False
    return fd


def exit_status(signum: int) -> int:
    """The shell's exit status for a process ended by ``signum`` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)
