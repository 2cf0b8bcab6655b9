"""Multi-process search and retraining under ``torchrun``: who this process is, its process group, and how a
failure ends the job.

``torchrun --nproc_per_node=N nasrun retrain ...`` (or ``search``, or ``-m nasrun``) starts N processes and
tells each its place through ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with ``WORLD_SIZE`` unset or 1
nothing here is used and a run is the one-process one, bit for bit. A submitit job of several tasks (the Slurm
preset with ``nodes`` × ``tasks_per_node`` > 1) is the same kind of job: :func:`join_submitit_job` gives
its tasks torchrun's variables.

A job has one channel besides the process group: the key-value store ``torchrun`` already runs for its
rendezvous (``MASTER_ADDR:MASTER_PORT``), under keys of our own. It carries what must reach the other
ranks even while they wait inside a collective:

* rank 0's run folder (Hydra names it after the clock, which the ranks would read at different
  seconds), before any other rank starts Hydra;
* the first failure: the rank that raises first records ``{rank, reason}``. A watchdog thread in every
  rank polls for it; rank 0's writes result.json ("failed", with the reason and the failing rank) and
  every other rank's ends its process at once. A rank blocked in an all-reduce that its failed peer
  will never join cannot be woken from Python, and torch.distributed's timeouts (30 minutes for gloo)
  are far too long, so the watchdog ends the process instead (``os._exit``: nothing is left half
  written, since every file of a run folder is written atomically).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from nasrun.errors import ConfigError
from nasrun.parallel.ranks import (  # noqa: F401 - this process's place in the job, used as distributed.rank()
    FAIL_HOOK, PIPELINE_REFUSED, check_config, is_distributed, join_submitit_job, local_rank, rank, world_size)

log = logging.getLogger(__name__)

_POLL_S = 0.2  # how often the watchdog looks for a failure
_ACK_S = 10.0  # how long a failed rank waits for rank 0 to record its failure before it exits


class RankFailed(RuntimeError):
    """Another rank failed first (``failed_rank`` None: one that ended without a report): this rank's own error,
    if any, is a consequence of it."""

    def __init__(self, failed_rank: Optional[int], reason: str) -> None:
        self.failed_rank, self.reason = failed_rank, reason
        text = failure_reason(None, reason) if failed_rank is None else f"rank {failed_rank} failed: {reason}"
        super().__init__(text)


def failure_reason(failed_rank: Optional[int], reason: str) -> str:
    """How result.json words a job's failure: the rank that failed first, and why."""
    if failed_rank is None:
        return f"a rank ended without a report (killed or crashed: see torchrun's summary); then {reason}"
    return f"rank {failed_rank}: {reason}"


def _lost_peer(exc: Exception) -> bool:
    """A collective failed because another rank's process is gone (a consequence, not a cause)."""
    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or "closed by peer" in text or "reset by peer" in text


class Job:
    """This process's part in a torchrun job: rank, channel store, process group, failure watchdog."""

    def __init__(self) -> None:
        self.rank, self.world, self.local_rank = rank(), world_size(), local_rank()
        run_id, attempt = os.environ.get("TORCHELASTIC_RUN_ID", ""), os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.prefix = f"nasrun/{run_id}/{attempt}/"  # a restarted job (--max-restarts) starts clean
        store, _, _ = next(dist.rendezvous("env://"))  # rank 0 hosts it unless torchrun's agent does
        self.store = dist.PrefixStore(self.prefix, store)
        self.device: Optional[torch.device] = None
        self.recorder: Optional[Callable[[dict], None]] = None  # rank 0: writes result.json for another rank
        self.command = "retrain"  # what the one-line messages name (set by the run)
        self._lock = threading.Lock()
        self._handled = False  # a failure is being reported by this process (main thread or watchdog)
        self._stop = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._fail_at = _parse_fail_hook(os.environ.get(FAIL_HOOK))

    # -- before Hydra: one run folder for all ranks

    def publish_run_dir(self, path: str) -> None:
        """Rank 0: the run folder Hydra resolved, for the other ranks."""
        self.store.set("run_dir", path)

    def run_dir(self) -> str:
        """Rank 0's run folder (waits until rank 0 has published it)."""
        return self.store.get("run_dir").decode()

    # -- the process group

    def start(self, device_name: str) -> torch.device:
        """Init the process group (once per process) on this rank's device, and the failure watchdog."""
        if self.device is not None:
            return self.device
        self._watcher = threading.Thread(target=self._watch, name="nasrun-rank-watchdog", daemon=True)
        self._watcher.start()
        atexit.register(self.close)
        device = self._device(device_name)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                store=dist.PrefixStore("pg", self.store), rank=self.rank, world_size=self.world)
        self.device = device
        log.info("rank %d of %d on %s (%s)", self.rank, self.world, device, dist.get_backend())
        return device

    def _device(self, name: str) -> torch.device:
        from nasrun.run.rng import resolve_device

        device = resolve_device(name)
        if device.type != "cuda":
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={self.local_rank} but this machine has {torch.cuda.device_count()} "
                              "CUDA device(s): start at most that many processes per node")
        return torch.device("cuda", self.local_rank)

    def close(self) -> None:
        """Stop the watchdog and leave the process group (at exit; after a failure the group is left as it is,
        since a collective may still be pending on it)."""
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            # its store client must be gone before the interpreter tears down: destroyed later, from a frozen
            # daemon thread, its connection thread is still joinable and the process aborts ("terminate called")
            self._watcher.join(timeout=2 * _POLL_S + 5)
        if dist.is_initialized() and not self._handled:
            dist.destroy_process_group()

    # -- collectives the runs use

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (in float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self._reduce_device())
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics), as DDP's broadcast_buffers does."""
        self.broadcast(list(module.buffers()))

    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        """Give every rank rank 0's values of ``tensors`` (in place, outside autograd)."""
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t, src=0)

    def _reduce_device(self) -> torch.device:
        return self.device if self.device is not None and self.device.type == "cuda" else torch.device("cpu")

    # -- failures

    def injected_failure(self, epoch: int, step: int) -> None:
        """The test hook (``NASRUN_TEST_FAIL_RANK``): raise here on the chosen rank and epoch, at step 1."""
        if self._fail_at is not None and self._fail_at == (self.rank, epoch) and step == 1:
            raise RuntimeError(f"{FAIL_HOOK}: failure injected on rank {self.rank} in epoch {epoch}")

    @contextmanager
    def failures(self) -> Iterator[None]:
        """Report an exception to the other ranks; one that follows another rank's failure becomes RankFailed."""
        try:
            yield
        except Exception as exc:
            reported = self._claim(exc)
            if reported is exc:
                raise
            raise reported from exc

    def _claim(self, exc: Exception) -> Exception:
        """The exception to raise: ``exc`` if this rank failed first (then recorded in the store), else RankFailed."""
        with self._lock:  # while the watchdog handles a failure it holds the lock until the process ends
            if isinstance(exc, RankFailed) or self._handled:  # already reported (an outer failures() block)
                return exc
            self._handled = True
            first = self._first_failure(exc)
        if first is not None and first["rank"] != self.rank:
            return RankFailed(first["rank"], first["reason"])
        if self.rank != 0:
            self._wait_recorded()
        return exc

    def _first_failure(self, exc: Exception) -> Optional[dict]:
        """Record this rank's failure if it is the job's first; return the job's first failure (None: unreachable)."""
        from nasrun.run.lifecycle import reason_of

        try:
            # a rank that raises reports before it exits, so a lost peer with no report was killed or crashed
            if self.store.add("failures", 1) == 1:
                failed = None if _lost_peer(exc) else self.rank
                self.store.set("failure", json.dumps({"rank": failed, "reason": reason_of(exc)}))
            self.store.wait(["failure"], timedelta(seconds=5))
            return json.loads(self.store.get("failure"))
        except Exception:  # noqa: BLE001 - the store is gone (rank 0 ended): report our own error
            return None

    def acknowledge(self) -> None:
        """Rank 0: the failure is in result.json (the failed rank may exit now)."""
        try:
            self.store.set("recorded", "1")
        except Exception:  # noqa: BLE001 - nobody left to tell
            pass

    def _wait_recorded(self) -> None:
        """A failed rank other than 0 stays until rank 0 has recorded the failure (at most a few seconds)."""
        try:
            self.store.wait(["recorded"], timedelta(seconds=_ACK_S))
        except Exception:  # noqa: BLE001 - rank 0 is gone or stuck: exit anyway
            pass

    def _watch(self) -> None:
        """Watchdog thread: when another rank has failed, record it (rank 0) and end this process."""
        try:
            store = dist.PrefixStore(self.prefix, dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                wait_for_workers=False, timeout=timedelta(seconds=30)))
            while not self._stop.wait(_POLL_S):
                if store.check(["failure"]):
                    failure = json.loads(store.get("failure"))
                    if failure["rank"] != self.rank:
                        self._end(failure)
                    return
        except Exception:  # noqa: BLE001 - the store went away: the job is ending anyway
            return

    def _end(self, failure: dict) -> None:
        """Another rank failed: rank 0 records it; every rank says so in one line and exits with status 1."""
        with self._lock:
            if self._handled:  # this rank's main thread is already reporting (and will exit)
                return
            self._handled = True
            try:
                if self.rank == 0 and self.recorder is not None:
                    self.recorder(failure)
                    self.acknowledge()
                why = RankFailed(failure["rank"], failure["reason"])
                print(f"nasrun {self.command}: rank {self.rank} stopped: {why}", file=sys.stderr)
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """A seed for rank ``rank``'s own random draws (drop path) from ``epoch`` on, so ranks never repeat each other's."""
    import numpy as np

    return int(np.random.SeedSequence(int(seed), spawn_key=(17, int(rank), int(epoch))).generate_state(1, np.uint64)[0])


def _parse_fail_hook(value: Optional[str]) -> Optional[tuple[int, int]]:
    """``R`` or ``R:E`` -> (rank, epoch); unset -> None."""
    if not value:
        return None
    rank_text, _, epoch_text = value.partition(":")
    return int(rank_text), int(epoch_text or 0)


_JOB: Optional[Job] = None


def job() -> Job:
    """This process's Job (created on first use: joins torchrun's store)."""
    global _JOB
    if _JOB is None:
        _JOB = Job()
    return _JOB


# ------------------------------------------------------------------------------------------ BatchNorm


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient (the sum's gradient is the sum of the ranks' gradients)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class RankSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d normalising with the statistics of the whole global batch, over all ranks, on any device.

    torch's SyncBatchNorm runs on GPUs only; this is its CPU (gloo) counterpart, used for
    ``recipe.sync_bn=true`` off CUDA: two all-reduces per layer (sum, then sum of squared deviations,
    for the accuracy of a two-pass variance), running statistics updated like BatchNorm2d's with the
    global count. Its state dict is BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        momentum = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return rank_batch_norm(x, self.running_mean if self.track_running_stats else None,
                               self.running_var if self.track_running_stats else None,
                               self.weight if self.affine else None, self.bias if self.affine else None,
                               momentum or 0.0, self.eps)


def rank_batch_norm(x: torch.Tensor, running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
                    weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], momentum: float,
                    eps: float) -> torch.Tensor:
    """Training-mode ``F.batch_norm`` with the statistics of the global batch over all ranks (any device).

    Two all-reduces: the sums, then the sums of squared deviations (a two-pass variance, for accuracy).
    The running statistics, when given, move by ``momentum`` towards the global mean and unbiased variance.
    """
    c = x.shape[1]
    sums = _SumOverRanks.apply(torch.cat([x.sum((0, 2, 3)), x.new_tensor([x.numel() / c])]))
    count = sums[c].detach()
    mean = sums[:c] / count
    centred = x - mean.view(1, c, 1, 1)
    var = _SumOverRanks.apply((centred * centred).sum((0, 2, 3))) / count
    y = centred * torch.rsqrt(var + eps).view(1, c, 1, 1)
    if weight is not None:
        y = y * weight.view(1, c, 1, 1)
    if bias is not None:
        y = y + bias.view(1, c, 1, 1)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            running_var.mul_(1 - momentum).add_(var.detach() * count / max(float(count) - 1, 1.0), alpha=momentum)
    return y


def data_parallel(model: nn.Module, device: torch.device, ignore: Sequence[str] = ()) -> nn.Module:
    """``model`` in DistributedDataParallel, without DDP's buffer broadcast before every forward.

    BN statistics stay per rank during an epoch; :meth:`Job.broadcast_buffers` sends rank 0's before each
    test, which is what DDP's default would leave too, at one broadcast per epoch instead of per step.
    (torch 2.14 renamed ``broadcast_buffers`` ``forward_sync_buffers``; both still sync at construction.)
    ``ignore``: names of parameters DDP leaves alone (neither broadcast at construction nor reduced).
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    names = inspect.signature(DistributedDataParallel.__init__).parameters
    if device.type != "cuda":  # the fused supernet's CPU path makes channels-last weight gradients: DDP copies them
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in names else {"broadcast_buffers": False}
    if ignore:  # the reducer names a root module's parameter ".name", the rest of DDP "name": give both
        names = [*ignore, *(f".{n}" for n in ignore if "." not in n)]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of ``module`` made global-batch: torch's SyncBatchNorm on CUDA, RankSyncBatchNorm elsewhere.

    The parameters and buffers are the same tensors, so an optimiser built before still applies and the
    state dict keys do not change (a checkpoint loads into either kind).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            setattr(module, name, _as_rank_sync(child))
        else:
            sync_batchnorm(child, device)
    return module


def _as_rank_sync(bn: nn.BatchNorm2d) -> RankSyncBatchNorm:
    new = RankSyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.weight, new.bias = bn.weight, bn.bias
    new.running_mean, new.running_var, new.num_batches_tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked
    new.train(bn.training)
    return new


__all__ = ["FAIL_HOOK", "Job", "PIPELINE_REFUSED", "RankFailed", "RankSyncBatchNorm", "check_config", "data_parallel",
           "failure_reason", "rank_batch_norm", "is_distributed", "job", "join_submitit_job", "local_rank", "rank", "rank_seed",
           "sync_batchnorm", "world_size"]
