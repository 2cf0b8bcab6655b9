"""The command line's side of a multi-process job: what torchrun and multi-task Slurm jobs refuse before any
work, how ranks other than 0 follow rank 0's run folder, and how they report a failure.

Torch-free at import: the command line asks these questions before it starts Hydra; the process group
(:mod:`nasrun.parallel.distributed`) is imported only inside a job of several processes.
"""

from __future__ import annotations

import logging
import sys

from nasrun.config.overrides import is_multirun, jobs, override_tokens
from nasrun.errors import ConfigError, NasrunError
from nasrun.parallel import ranks

SWEEP_REFUSED = "-m/--multirun is not allowed under torchrun: start one torchrun per job of the sweep"


def check_torchrun(command: str, multirun: bool) -> None:
    """Under torchrun a single search or retraining runs: pipeline and sweeps are refused."""
    if command == "pipeline":
        raise ConfigError(ranks.PIPELINE_REFUSED)
    if multirun:
        raise ConfigError(SWEEP_REFUSED)


def check_multi_task_jobs(command: str, args: list[str]) -> None:
    """A submitit job of several tasks (``hydra.launcher.nodes`` × ``tasks_per_node`` > 1) is one multi-process
    job, like torchrun's: what torchrun refuses, and a global batch the tasks cannot split evenly, are refused
    here, before anything is queued."""
    tokens = override_tokens(args)
    if not is_multirun(args) or not any(t.startswith(("hydra/launcher=", "hydra.launcher.")) for t in tokens):
        return
    from nasrun.config.compose import compose, hydra_compose_raw, to_typed

    try:
        launcher = hydra_compose_raw(command, jobs(tokens, True)[0], hydra=True).hydra.launcher
    except Exception:  # noqa: BLE001 - the command-line check has reported any composition problem
        return
    world = int(launcher.get("nodes") or 1) * int(launcher.get("tasks_per_node") or 1)
    if world <= 1:
        return
    check_torchrun(command, multirun=False)
    key = "search.batch_size" if command == "search" else "recipe.batch_size"
    where = f"in a job of {world} tasks (hydra.launcher.nodes x tasks_per_node)"
    for job in jobs(tokens, True):
        typed = to_typed(compose(command, job))
        batch = typed.search.batch_size if command == "search" else typed.recipe.batch_size
        ranks.check_config(batch, typed.device, key, world, where)


def follow_rank0(args: list[str]) -> list[str]:
    """A rank other than 0 runs in rank 0's run folder (Hydra names it after the clock) and writes none of its files.

    Its log shows warnings and errors only, on stderr; rank 0 writes .hydra/ and the command's log.
    """
    from nasrun.parallel import distributed

    run_dir = distributed.job().run_dir()
    quoted = "'" + run_dir.replace("'", "\\'").replace("${", "\\${") + "'"
    log_format = f"'[rank {ranks.rank()}][%(name)s][%(levelname)s] - %(message)s'"
    return [*args, f"hydra.run.dir={quoted}", "hydra.output_subdir=null", "hydra/job_logging=stdout",
            "hydra.job_logging.root.level=WARNING", "hydra.job_logging.handlers.console.stream=ext://sys.stderr",
            f"hydra.job_logging.formatters.simple.format={log_format}"]


def join_job(out_dir: str) -> None:
    """At the start of a job: a submitit task joins its job's ranks; torchrun's rank 0 publishes its run folder
    (the other ranks wait for it before they start Hydra)."""
    if ranks.join_submitit_job():  # Hydra gave every task of the job the same folder already
        if ranks.rank() != 0:
            _quiet_follower()
    elif ranks.is_distributed() and ranks.rank() == 0:
        from nasrun.parallel import distributed

        distributed.job().publish_run_dir(out_dir)


def _quiet_follower() -> None:
    """A submitit task other than rank 0 logs as a torchrun follower does: warnings and errors only, to its own
    submitit log and not to the run's log file, which Hydra opened in every task of the job."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
    fmt = logging.Formatter(f"[rank {ranks.rank()}][%(name)s][%(levelname)s] - %(message)s")
    for handler in root.handlers:
        handler.setLevel(logging.WARNING)
        handler.setFormatter(fmt)
    root.setLevel(logging.WARNING)


def rank_failed(command: str, exc: Exception, in_sweep: bool) -> dict:
    """A rank other than 0 failed, or stopped after another rank did: one line (rank 0 records the job).

    In a sweep (a submitit job of several tasks) the task returns, as rank 0's does, so the launcher
    collects every task's outcome instead of finding a task that ended without one.
    """
    from nasrun.parallel.distributed import RankFailed
    from nasrun.run.lifecycle import reason_of

    what = "stopped" if isinstance(exc, RankFailed) else "failed"
    print(f"nasrun {command}: rank {ranks.rank()} {what}: {reason_of(exc)}", file=sys.stderr)
    if in_sweep:
        return {"status": "failed", "reason": reason_of(exc), "rank": ranks.rank()}
    raise SystemExit(2 if isinstance(exc, NasrunError) else 1) from None
