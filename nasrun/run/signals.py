"""SIGINT and SIGTERM as an exception a run can record, and the exit status a shell expects.

Torch-free, so the command line installs the handlers before anything heavy is imported.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


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
