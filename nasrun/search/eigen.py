"""The dominant eigenvalue of the architecture Hessian of the validation loss (R-DARTS' collapse signal).

R-DARTS (Zela et al., ICLR 2020) observes that DARTS degenerates (parameter-free ops, skip
connections) as the validation loss surface becomes sharp in the architecture parameters, and
tracks the dominant eigenvalue of ``d^2 L_val / d alpha^2`` as an early-stopping signal. This
module estimates it by power iteration on exact Hessian-vector products (double backward), so
the Hessian is never formed, and without disturbing the search that calls it: see
:func:`dominant_eigenvalue`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from nasrun.methods.objective import ArchObjective

Batch = tuple[Tensor, Tensor]


@contextmanager
def _search_state_preserved(model: nn.Module) -> Iterator[None]:
    """Eval mode, gradients on, and on exit everything the search would see restored bit-for-bit.

    Restored: each module's own ``training`` flag (not one flag for all, in case some were frozen
    in eval), every buffer (BatchNorm running statistics; they do not move in eval mode, this
    guards that), and the global RNG state of the CPU and of every CUDA device the model is on.
    """
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cpu_rng = torch.get_rng_state()
    cuda_devices = sorted({t.device.index or 0 for t in [*model.parameters(), *model.buffers()] if t.is_cuda})
    cuda_rng = [(d, torch.cuda.get_rng_state(d)) for d in cuda_devices]
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        torch.set_rng_state(cpu_rng)
        for d, state in cuda_rng:
            torch.cuda.set_rng_state(state, d)


def _hvp(model: nn.Module, batches: Sequence[Batch], objective: ArchObjective, alphas: list[Tensor],
         v: Tensor) -> Tensor:
    """``H v`` for the mean loss over ``batches``: the mean of the per-batch double-backward products.

    Each batch's graph is rebuilt per call and freed before the next batch, so memory is that of a
    single batch's double backward whatever the number of batches.
    """
    pieces = list(torch.split(v, [a.numel() for a in alphas]))
    pieces = [p.view_as(a) for p, a in zip(pieces, alphas)]
    total = torch.zeros_like(v)
    for x, y in batches:
        # the alphas' dtype: the evidence's batches come as the loaders give them, fp32, also to an fp64 run
        loss = objective(model, x.to(alphas[0].dtype), y).total
        grads = torch.autograd.grad(loss, alphas, create_graph=True, allow_unused=True)
        # an alpha the loss is constant or linear in contributes a zero row of H, not an error
        live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        if not live:
            continue
        hv = torch.autograd.grad([grads[i] for i in live], alphas, grad_outputs=[pieces[i] for i in live],
                                 allow_unused=True)
        total += torch.cat([(h if h is not None else torch.zeros_like(a)).reshape(-1)
                            for h, a in zip(hv, alphas)]).detach()
    return total / len(batches)


def dominant_eigenvalue(model: nn.Module, batches: Sequence[Batch], iters: int = 20,
                        objective: Optional[ArchObjective] = None, tol: float = 1e-4,
                        seed: int = 0) -> dict[str, float]:
    """The eigenvalue of largest magnitude of ``d^2 L / d alpha^2``, ``L`` the mean objective over ``batches``.

    ``alpha`` is the concatenation of ``model.arch_parameters()`` (the alphas of every kind, and the
    edge betas under PC-DARTS' edge normalisation); ``L`` is the mean of ``objective(model, x, y).total``,
    i.e. the supernet under its alpha map's mixing weights plus the map's regulariser.

    The Hessian w.r.t. the alphas can be indefinite. Power iteration converges to the eigenvalue
    of largest *magnitude*, which may be negative; R-DARTS reports the largest (dominant) one,
    and near a collapse it is the large positive curvature that dominates. When the largest
    positive and negative eigenvalues have nearly equal magnitude the iteration converges slowly
    (``residual`` stays large), so check it. (R-DARTS' own code also adds its architecture weight
    decay to the Hessian, ``+1e-3 I``; add that to the result if comparing with its numbers.)

    Power iteration from a random unit vector drawn from a private generator seeded with ``seed``;
    the estimate is the Rayleigh quotient ``v . Hv``; it stops when the relative change is below
    ``tol`` or after ``iters`` products. Each product costs one forward and one double backward per batch.

    The search is not disturbed: the model runs in eval mode (BatchNorm on running statistics, no
    dropout) and its modes, buffers, weights and alphas are unchanged afterwards; the global RNG
    state is restored (the trajectory after the call is bit-identical); a sampling alpha map uses one draw for
    every product, and its generator is put back (:meth:`~nasrun.methods.alpha_maps.AlphaMap.frozen`); only ``torch.autograd.grad``
    is used, so no ``.grad`` is written.

    Returns ``{"eigenvalue", "iterations", "residual"}``, residual ``= ||Hv - lambda v|| / |lambda|``.
    """
    if not batches:
        raise ValueError("dominant_eigenvalue needs at least one validation batch")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    objective = objective or ArchObjective()
    alphas = list(model.arch_parameters())
    n = sum(a.numel() for a in alphas)
    generator = torch.Generator().manual_seed(seed)
    # drawn in fp32 whatever the alphas' dtype, so an fp64 run starts from the fp32 run's vector
    v = torch.randn(n, generator=generator, dtype=torch.float32).to(device=alphas[0].device, dtype=alphas[0].dtype)
    v = v / v.norm()
    lam, hv, k = math.nan, torch.zeros_like(v), 0
    alpha_map = getattr(model, "alpha_map", None)
    with _search_state_preserved(model), (alpha_map.frozen() if alpha_map is not None else nullcontext()):
        for k in range(1, iters + 1):
            hv = _hvp(model, batches, objective, alphas, v)
            previous, lam = lam, float(v @ hv)
            converged = abs(lam - previous) <= tol * abs(lam)  # False on the first step (nan)
            norm = float(hv.norm())
            if converged or norm == 0.0 or k == iters:
                break
            v = hv / norm
    error = float((hv - lam * v).norm())
    residual = error / abs(lam) if lam != 0.0 else (0.0 if error == 0.0 else math.inf)
    return {"eigenvalue": lam, "iterations": k, "residual": residual}
