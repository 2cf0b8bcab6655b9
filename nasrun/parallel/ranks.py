"""Who this process is in a multi-process job, read from the environment torchrun (or a submitit task) sets.

Torch-free, so the command line can ask before it imports anything heavy; :mod:`nasrun.parallel.distributed`
builds the process group on top of it.
"""

from __future__ import annotations

import os
from typing import Optional

from nasrun.errors import ConfigError

#: What ``nasrun pipeline`` says under torchrun, with exit status 2.
PIPELINE_REFUSED = ("pipeline runs in one process; under torchrun run its parts: nasrun search, then nasrun retrain "
                    "genotype=<the search's run folder>")
#: Test hook: ``NASRUN_TEST_FAIL_RANK=R`` (or ``R:E``) raises on rank R at the second step of epoch E (default 0).
FAIL_HOOK = "NASRUN_TEST_FAIL_RANK"


def world_size() -> int:
    """Processes in the job: ``WORLD_SIZE`` set by torchrun, 1 without it."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return int(os.environ.get("RANK") or 0) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's rank on its machine: the index of its GPU."""
    return int(os.environ.get("LOCAL_RANK") or 0) if world_size() > 1 else 0


def is_distributed() -> bool:
    """True under torchrun with more than one process; False keeps every single-process path."""
    return world_size() > 1


def join_submitit_job() -> bool:
    """In a submitit task of a job with several tasks, export what torchrun would (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), so that the job's tasks form one multi-process job.

    Returns True when it did. Outside submitit, in a one-task job, or when ``WORLD_SIZE`` is already set
    (torchrun inside the task) nothing changes. The master is the job's first node; the port is derived
    from the job id (the same in every task; jobs of an array on one node seldom share one) unless
    ``MASTER_PORT`` is set. ``CUDA_VISIBLE_DEVICES`` is left alone: every task sees the node's GPUs and takes
    ``cuda:LOCAL_RANK``, as under torchrun.
    """
    if os.environ.get("WORLD_SIZE") or not os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    import submitit
    from submitit.helpers import TorchDistributedEnvironment

    if submitit.JobEnvironment().num_tasks <= 1:
        return False
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return True


def check_config(batch_size: int, device: str, key: str = "recipe.batch_size", world: Optional[int] = None,
                 where: str = "under torchrun") -> None:
    """What a multi-process run of ``world`` processes (default: this job's) needs of the config (``key``: the batch
    size's key); a ConfigError line before any work."""
    n = world_size() if world is None else world
    if n <= 1:
        return
    if batch_size % n:
        raise ConfigError(f"{key}={batch_size} is not allowed {where} with {n} processes: "
                          f"it is the global batch, split evenly over the processes, so a multiple of {n}")
    if device.startswith("cuda:"):
        raise ConfigError(f"device={device!r} is not allowed {where}: each process uses cuda:LOCAL_RANK; "
                          "set device=cuda or auto")
