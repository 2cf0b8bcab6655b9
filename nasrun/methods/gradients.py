"""Gradients of batch-mean losses, made the whole global batch's when a search runs on several processes.

The estimators take every gradient with :func:`grad` and say how many images the loss averaged. In
one process that is ``torch.autograd.grad``. Inside :func:`averaged_over_ranks` (a torchrun search) each
rank's gradient is of its own slice of the global batch, and :func:`grad` all-reduces it, weighted by the
slice's size, into the gradient of the global batch's mean loss: what one process with the global batch
computes, up to the order of the float additions. Finite differences, virtual steps and products then
work on the same global directions and radii on every rank, so alphas and weights stay replicated.

A gradient taken with ``create_graph=True`` is an intermediate of a double backward: it stays this
rank's (the product built on it is reduced instead, which is the same thing because it is linear in it).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

Grads = list[Optional[Tensor]]
Reducer = Callable[[Grads, int], Grads]

_REDUCER: ContextVar[Optional[Reducer]] = ContextVar("nasrun_gradient_reducer", default=None)


def grad(outputs: Tensor | Sequence[Tensor], inputs: Sequence[Tensor], *, batch: int, **kwargs) -> Grads:
    """``torch.autograd.grad`` of a mean over ``batch`` images; over all ranks inside :func:`averaged_over_ranks`."""
    out = list(torch.autograd.grad(outputs, inputs, **kwargs))
    reduce = _REDUCER.get()
    if reduce is None or kwargs.get("create_graph"):
        return out
    return reduce(out, batch)


@contextmanager
def averaged_over_ranks() -> Iterator[None]:
    """Every :func:`grad` in this block is summed over the process group, weighted by each rank's batch."""
    token = _REDUCER.set(weighted_all_reduce)
    try:
        yield
    finally:
        _REDUCER.reset(token)


def weighted_all_reduce(grads: Grads, batch: int) -> Grads:
    """sum_r n_r g_r / sum_r n_r over the ranks, in one all-reduce (the last element carries the n_r).

    Every rank has the same gradients present (the same graph), so the flat buffers line up.
    """
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    flat = torch.cat([g.reshape(-1) for g in present])
    buffer = torch.cat([flat * batch, flat.new_tensor([float(batch)])])
    dist.all_reduce(buffer)
    mean = buffer[:-1] / buffer[-1]
    out: Grads = []
    offset = 0
    for g in grads:
        if g is None:
            out.append(None)
            continue
        out.append(mean[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return out


__all__ = ["averaged_over_ranks", "grad", "weighted_all_reduce"]
