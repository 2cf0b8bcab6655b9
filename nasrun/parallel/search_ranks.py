"""A search on several torchrun processes: what it supports, how the supernet is wrapped, what is summed.

Weights and alphas are replicated. Every rank takes its slice of each global search-train and
search-val batch (the order is one process's); the weight step runs through DistributedDataParallel,
and every gradient an estimator takes is all-reduced by :mod:`nasrun.methods.gradients`, so each step
is the one-process step with the global batch up to the order of float additions. BatchNorm
normalises each rank's slice by default; ``search.sync_bn=true`` normalises over the global batch (plain
and fused supernets alike), which makes the trajectory one process's (see docs/multi-gpu.md).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Iterator, Optional

import torch

from nasrun.parallel import distributed
from nasrun.config.options import AXES, options_with
from nasrun.config.schema import NasrunConf
from nasrun.parallel.distributed import Job
from nasrun.errors import ConfigError
from nasrun.methods.gradients import averaged_over_ranks
from nasrun.parallel.rank_runs import evaluate_shares
from nasrun.supernet.fused import global_batch_norm
from nasrun.train.steps import evaluate


def check_search_ranks(cfg: NasrunConf) -> None:
    """What a torchrun search needs of the config: a ConfigError line before any work.

    Each axis option says whether it runs under torchrun (``runs_under_torchrun``) and whether, as set, it takes
    a double backward (``estimator.double_backward()``), which the ranks' global BatchNorm cannot pass.
    """
    world = distributed.world_size()
    if world <= 1:
        return
    distributed.check_config(cfg.search.batch_size, cfg.device, key="search.batch_size")
    for axis in AXES:
        option = getattr(cfg, axis)
        if not option.runs_under_torchrun:
            allowed = ", ".join(options_with(axis, "runs_under_torchrun"))
            raise ConfigError(f"{axis}={option.name} is not supported by a search under torchrun ({world} processes): "
                              f"there {axis} is one of {allowed}; run this method in one process")
    if cfg.search.clip_with_alphas:
        raise ConfigError(f"search.clip_with_alphas=true is not supported by a search under torchrun ({world} "
                          "processes): the ranks reduce the weights' gradient only; run it in one process")
    products = cfg.estimator.double_backward()
    if cfg.search.sync_bn and products is not None:
        raise ConfigError(f"{products.setting} is not supported with search.sync_bn=true under torchrun ({world} "
                          "processes): its double backward cannot pass through the ranks' BatchNorm all-reduces; "
                          f"use {products.instead}, or search.sync_bn=false")


def attach_ranks(state: Any, job: Job) -> None:
    """Make ``state`` (a SearchState, after any resume) a rank of the job: global BatchNorm if asked, then DDP."""
    model = state.model
    if state.cfg.search.sync_bn:
        distributed.sync_batchnorm(model, state.device)
        state.numerics.prepare(model)  # the new BatchNorms take fp32 input too
    # DDP syncs the weights; the alphas (and betas) get rank 0's values here and global gradients from the
    # estimators, and their weight-step gradients, which the step drops, are not reduced
    arch = {id(p) for p in model.arch_parameters()}
    job.broadcast(model.arch_parameters())
    state.parallel = distributed.data_parallel(model, state.device,
                                               ignore=[n for n, p in model.named_parameters() if id(p) in arch])
    state.job = job


def shared_mix(job: Job, mix: Optional[dict[str, torch.Tensor]]) -> Optional[dict[str, torch.Tensor]]:
    """A weight-step perturbation as rank 0 drew it (SDARTS-RS), on every rank: one process's draw."""
    if mix is not None:
        job.broadcast([mix[k] for k in sorted(mix)])
    return mix


@contextmanager
def rank_steps(state: Any) -> Iterator[None]:
    """Around an epoch's steps: every estimator gradient over all ranks and, with ``search.sync_bn``, the fused
    supernet's BatchNorms over the global batch (the plain one's modules were swapped by :func:`attach_ranks`)."""
    with ExitStack() as stack:
        stack.enter_context(averaged_over_ranks())
        if state.cfg.search.sync_bn:
            stack.enter_context(global_batch_norm())
        yield


def evaluate_ranks(state: Any, data: Any, val_idx: torch.Tensor) -> tuple[float, float]:
    """The search-val loss and accuracy of the replicated supernet: each rank its share, summed (with per-rank
    BN the ranks' statistics differ; rank 0's are the ones evaluated, as in the checkpoint)."""

    def share(lo: int, hi: int) -> list[float]:
        return list(evaluate(state.model, data.train, val_idx[lo:hi], state.cfg.search.eval_batch_size, data.mean,
                             data.std, state.device, numerics=state.numerics))

    loss, acc = evaluate_shares(state.job, state.model, len(val_idx), share)
    return loss, acc


__all__ = ["attach_ranks", "check_search_ranks", "evaluate_ranks", "rank_steps", "shared_mix"]
