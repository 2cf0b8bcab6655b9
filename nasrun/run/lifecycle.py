"""How a run ends, recorded the same way for search and retrain: completed, failed or interrupted.

:func:`recorded` wraps a run's work. SIGINT and SIGTERM (what Slurm sends before a time-out or a
preemption) become :class:`~nasrun.run.folder.Interrupted`; either way result.json says "interrupted"
with the last epoch whose checkpoint is kept, and any other exception says "failed" with the
reason. The exception then goes on to the CLI, which prints one line.
"""

from __future__ import annotations

import logging
import signal
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from nasrun.errors import NasrunError
from nasrun.run.signals import Interrupted, interrupts
from nasrun.run.folder import RunFolder

log = logging.getLogger(__name__)


def reason_of(exc: BaseException) -> str:
    """One line (at most ~500 characters) saying why a run stopped; a user error speaks for itself."""
    text = " ".join(str(exc).split())[:500]
    if isinstance(exc, NasrunError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def recorded(run: RunFolder, config: dict, last_epoch: Callable[[], Optional[int]]) -> Iterator[None]:
    started = time.time()
    try:
        with interrupts():
            yield
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        epoch = last_epoch()
        run.write_result("interrupted", reason=f"{name}: stopped; rerun the same command to resume",
                         signal=name, last_epoch=epoch, config=config)
        log.warning("interrupted by %s after epoch %s; the checkpoint is kept", name, "none" if epoch is None else epoch + 1)
        raise
    except Exception as exc:
        run.write_result("failed", reason=reason_of(exc), config=config, wall_seconds=time.time() - started,
                         last_epoch=last_epoch())
        log.error("failed: %s", reason_of(exc))  # the run's log says why too, not only result.json
        raise


__all__ = ["recorded", "reason_of"]
