"""One torchrun job's run folder: rank 0 locks and writes it, the other ranks run the same loop beside it.

Search and retraining share this lifecycle. ``body(run, job)`` is the command's loop; rank 0 gets the
real :class:`RunFolder`, every other rank a :class:`FollowerRunFolder` whose writes do nothing. A
completed run is answered on every rank without training. A failure on any rank is recorded once, in
rank 0's result.json, with the rank that failed first (see :mod:`nasrun.parallel.distributed`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from nasrun.parallel import distributed
from nasrun.data.streams import shard_bounds
from nasrun.parallel.distributed import Job, RankFailed
from nasrun.run.lifecycle import recorded
from nasrun.run.folder import FollowerRunFolder, RunFolder, write_result
from nasrun.spaces.ops import NOISE

log = logging.getLogger(__name__)

Body = Callable[[RunFolder, Job], dict]
LastEpoch = Callable[[], Optional[int]]


def run_ranks(command: str, out_dir: str | Path, config: dict, log_name: str, device: str, body: Body,
              last_epoch: LastEpoch) -> dict:
    """This rank's part of a torchrun ``command``; ``last_epoch()`` is the last finished epoch (for the record)."""
    job = distributed.job()
    job.command = command
    started = time.time()
    if job.rank == 0:  # from now on rank 0's watchdog records a failure of any rank
        job.recorder = lambda failure: _record_rank_failure(command, Path(out_dir), config, last_epoch, started,
                                                            job.world, failure)
    with job.failures():
        job.start(device)
        if job.rank != 0:
            previous = job.share(None)
            if previous is not None:
                return previous
            return body(FollowerRunFolder(out_dir, command), job)
        return _lead(command, out_dir, config, log_name, body, last_epoch, job)


def _lead(command: str, out_dir: str | Path, config: dict, log_name: str, body: Body, last_epoch: LastEpoch,
          job: Job) -> dict:
    """Rank 0: the run folder (lock, resume, every file) and, with recorded(), its own failure or another rank's."""
    with RunFolder(out_dir, command, log_name) as run:
        previous = job.share(run.completed(config))
        if previous is not None:
            log.info("%s already holds a completed %s; nothing to do", run.path, command)
            return previous
        try:
            with recorded(run, config, last_epoch), job.failures():
                return body(run, job)
        except Exception as exc:
            _note_failed_rank(run, exc, job)
            raise


def _record_rank_failure(command: str, out_dir: Path, config: dict, last_epoch: LastEpoch, started: float,
                         world: int, failure: dict) -> None:
    """Rank 0's watchdog: another rank failed first; result.json says which and why (as recorded() would)."""
    reason = distributed.failure_reason(failure["rank"], failure["reason"])
    log.error("%s failed: %s", command, reason)
    write_result(out_dir, "failed", command=command, reason=reason, failed_rank=failure["rank"], world_size=world,
                 config=config, wall_seconds=time.time() - started, last_epoch=last_epoch())


def _note_failed_rank(run: RunFolder, exc: Exception, job: Job) -> None:
    """Add to the failure recorded() wrote which rank failed first and the job's size; let that rank exit."""
    result = run.read_result() or {}
    if result.get("status") == "failed":
        failed = exc.failed_rank if isinstance(exc, RankFailed) else job.rank
        reason = exc.reason if isinstance(exc, RankFailed) else result.get("reason")
        fields = {k: v for k, v in result.items() if k not in ("status", "finished_at")}
        run.write_result("failed", **{**fields, "reason": distributed.failure_reason(failed, reason),
                                      "failed_rank": failed, "world_size": job.world})
    job.acknowledge()


def evaluate_shares(job: Job, model: nn.Module, size: int, evaluate: Callable[[int, int], list[float]]) -> list[float]:
    """One process's evaluation of ``size`` items, each rank evaluating its share ``[lo, hi)`` with ``evaluate``.

    ``evaluate`` returns a mean loss, then accuracies; the ranks' shares are summed as a loss sum and as
    counts of correct items (rounded: exact), so the figures equal one process's. Rank 0's BatchNorm
    statistics go to every rank first, so every rank evaluates the checkpointed model.
    """
    job.broadcast_buffers(model)
    lo, hi = shard_bounds(size, job.rank, job.world)
    loss, *accuracies = evaluate(lo, hi)
    m = hi - lo
    sums = job.sum([loss * m, *(round(a * m) for a in accuracies), m])
    n = max(sums[-1], 1)
    return [s / n for s in sums[:-1]]


def reseed_rank(seed: int, rank: int, epoch: int) -> None:
    """A rank other than 0 draws its own random numbers (drop path, skip dropout, noise) from ``epoch`` on;
    rank 0 goes on as one process would, and the others must not repeat its draws."""
    own = distributed.rank_seed(seed, rank, epoch)
    torch.manual_seed(own)
    NOISE.seed(own)


class NoEpochLog:
    """What a rank other than 0 has in place of the EpochLog: it writes nothing (rank 0 writes the run folder)."""

    def epoch(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


__all__ = ["NoEpochLog", "evaluate_shares", "reseed_rank", "run_ranks"]
