"""A population: the searches of a sweep's members in one process, each exactly its own solo run.

The members advance in turn, one epoch each (:func:`nasrun.search.loop.search_epochs`). Everything a
member draws from the process (torch's, numpy's and Python's generators, the CUDA generator, the
noise op's source) is set to that member's state before its epoch and kept aside after it, so a
member's numbers do not depend on the others: they are its solo run's. Each member writes its own
run folder (its search.log only while it runs), and a dataset is loaded once for all of them.

Faults stay with their member: one that fails (a non-finite loss, a bad file) is recorded as failed
and the others go on. SIGINT or SIGTERM records every member that has not ended as interrupted (its
last checkpoint is kept), then the exception goes on to the command. Rerunning resumes each member
from its own checkpoint; a completed member is not redone.
"""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Generator, Iterator, Optional

from nasrun.config.schema import NasrunConf
from nasrun.run.rng import OwnRandom
from nasrun.run.signals import Interrupted, hold, interrupts, kept_handlers, record_interrupted, signal_of

if TYPE_CHECKING:
    from nasrun.run.stacked import Lockstep

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One job of a population: its typed config, the search run folder, and its job folder.

    ``logs``: further files its lines go to while it runs (a pipeline job's ``pipeline.log``);
    ``on_epoch_end``: called after each of its epochs with the epoch and its metrics row.
    """

    cfg: NasrunConf
    out_dir: Path
    label: str = ""
    logs: list[Path] = field(default_factory=list)
    on_epoch_end: Optional[Callable[[int, dict], None]] = None


@dataclass
class Outcome:
    """How a member's search ended: ``completed``, ``failed`` or ``interrupted``; its result or its error."""

    status: str
    result: Optional[dict] = None
    error: Optional[BaseException] = None


def run_population(members: list[Member], engine: str = "turns") -> list[Outcome]:
    """Run every member's search to its end (or to the first signal); one :class:`Outcome` per member.

    ``engine``: ``turns`` (the members take turns, one epoch each) or ``stacked`` (they train together in one
    stacked network, :mod:`nasrun.run.stacked`; every member must be stackable). A signal records every
    member that has not ended as interrupted and is raised again.
    """
    from nasrun.data.load import shared_loads
    from nasrun.search.loop import search_epochs

    lockstep = _lockstep(members) if engine == "stacked" else None
    outcomes: list[Optional[Outcome]] = [None] * len(members)
    randoms = [OwnRandom() for _ in members]
    with kept_handlers(), interrupts(), shared_loads(), _member_logs(members) as logs:
        live: dict[int, Generator[int, None, dict]] = {}
        try:
            for i, member in enumerate(members):
                hook = lockstep.hook(i) if lockstep is not None else None
                live[i] = search_epochs(member.cfg, member.out_dir, member.on_epoch_end, hook)
            rounds = 0
            while live:
                if lockstep is not None and rounds > 0:  # every member is set up: their next epochs, together
                    lockstep.run_epoch([i for i in live if i in lockstep.states], randoms)
                for i in list(live):
                    with logs(i):
                        randoms[i].restore()
                        outcome = _advance(live[i], members[i])
                        randoms[i].keep(members[i].cfg)
                    if outcome is not None:
                        outcomes[i] = outcome
                        del live[i]
                rounds += 1
        except (Interrupted, KeyboardInterrupt) as exc:
            hold()  # a second signal must not cut the members' records short
            _interrupt(live, members, outcomes, signal_of(exc), logs)
            raise
    return [o for o in outcomes if o is not None]


def _lockstep(members: list[Member]) -> "Lockstep":
    """The stacked engine's trainer, after checking that every member can be stacked (one line if not)."""
    from nasrun.methods.stacking import check_stackable
    from nasrun.run.stacked import Lockstep

    for member in members:
        check_stackable(member.cfg, str(member.label or member.out_dir))
    return Lockstep()


def _advance(epochs: Generator[int, None, dict], member: Member) -> Optional[Outcome]:
    """One epoch of a member; its Outcome once its search has ended, else None."""
    try:
        next(epochs)
        return None
    except StopIteration as stop:
        result = stop.value or {}
        return Outcome(str(result.get("status", "completed")), result)
    except Exception as exc:  # noqa: BLE001 - the member's own record says why; the others go on
        log.error("population member %s failed: %s", member.label or member.out_dir, exc)
        return Outcome("failed", _read_result(member.out_dir), exc)


def _interrupt(live: dict[int, Generator], members: list[Member], outcomes: list[Optional[Outcome]], signum: int,
               logs) -> None:
    """Record every member that has not ended as interrupted: one still running records itself."""
    for i, member in enumerate(members):
        if outcomes[i] is not None:
            continue
        epochs = live.get(i)
        if epochs is not None and epochs.gi_suspended:  # between two epochs (not one never started)
            with logs(i):
                try:
                    epochs.throw(Interrupted(signum))  # its own record: interrupted after its last epoch
                except (Interrupted, StopIteration, Exception):  # noqa: BLE001 - ended either way
                    pass
        record_interrupted(member.out_dir, "search", signum)  # kept if the member recorded itself
        outcomes[i] = Outcome("interrupted", _read_result(member.out_dir), Interrupted(signum))
    log.warning("population interrupted by %s: %d member(s) recorded", signal.Signals(signum).name, len(members))


def _read_result(folder: Path) -> Optional[dict]:
    from nasrun.run.folder import read_result

    try:
        return read_result(folder)
    except Exception:  # noqa: BLE001 - a damaged record reads as none
        return None


@contextmanager
def _member_logs(members: list[Member]) -> Iterator:
    """A context per member inside which only that member's log files receive lines.

    A member's run folder adds its search.log to the root logger and keeps it while the member is
    suspended between epochs; the other members' files are taken off while one member runs. The job
    logging Hydra set up for the last job made before the population started is taken off first.
    """
    root = logging.getLogger()
    homes = [Path(m.out_dir).resolve() for m in members] + [p.resolve().parent for m in members for p in m.logs]
    for handler in [h for h in root.handlers if _writes_under(h, homes)]:
        root.removeHandler(handler)
    extra: dict[int, list[logging.Handler]] = {i: [_file_handler(p) for p in m.logs] for i, m in enumerate(members)}

    @contextmanager
    def only(i: int) -> Iterator[None]:
        own = [Path(members[i].out_dir).resolve()]
        hidden = [h for h in root.handlers if _writes_under(h, homes) and not _writes_under(h, own)]
        for handler in hidden:
            root.removeHandler(handler)
        for handler in extra[i]:
            root.addHandler(handler)
        try:
            yield
        finally:
            for handler in extra[i]:
                root.removeHandler(handler)
            for handler in hidden:
                root.addHandler(handler)

    try:
        yield only
    finally:
        for handlers in extra.values():
            for handler in handlers:
                handler.close()


def _writes_under(handler: logging.Handler, folders: list[Path]) -> bool:
    if not isinstance(handler, logging.FileHandler):
        return False
    path = Path(handler.baseFilename).resolve()
    return any(path.is_relative_to(folder) for folder in folders)


def _file_handler(path: Path) -> logging.Handler:
    from nasrun.run.folder import LOG_FORMAT

    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


__all__ = ["Member", "Outcome", "run_population"]
