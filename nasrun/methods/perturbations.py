"""Weight-step perturbations of the architecture: which mixing weights the weight step trains under.

The architecture step always sees the clean softmax(alpha). A perturbation returns the mixing
weights ({"normal": (E, K), "reduce": (E, K)}, cut off from the alphas) that the weight step uses instead, or None
for the clean ones. The alphas themselves are never modified, so nothing needs restoring.

SDARTS (Chen & Hsieh, ICML 2020; xiangning-chen/SmoothDARTS) perturbs the mixing weights A = softmax(alpha)
within an L-infinity ball of radius epsilon, ramped linearly over the epochs:

- ``random`` (SDARTS-RS): A + U(-eps, eps), elementwise;
- ``adversarial`` (SDARTS-ADV): projected sign-gradient ascent (PGD) on the weight step's own batch,
  with BatchNorm in eval mode, a random start, and the clean A kept when the attack did not raise
  the loss.

After every move a row (edge) is put back on the probability simplex, either as the reference
does (``simplex=renorm``: clamp to [0, 1], divide by the row sum; this can leave the ball slightly)
or by the Euclidean projection onto the simplex intersected with the ball (``simplex=project``).
PC-DARTS' edge weights (betas) are not perturbed: they are not mixing weights of an edge's ops.
Noise is drawn from torch's CPU generator (the checkpointed one) and then moved to the device, so
a resumed run draws the same noise on every device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

import torch
from torch import Tensor, nn

from nasrun.methods.objective import ArchObjective
from nasrun.config.options import AdversarialConf, NoPerturbationConf, RandomConf

Mix = Optional[dict[str, Tensor]]


class Perturbation(ABC):
    """Which mixing weights the weight step trains under (None: the clean ones)."""

    def __init__(self, objective: Optional[ArchObjective] = None) -> None:
        self.objective = objective or ArchObjective()

    @abstractmethod
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, epoch: int, epochs: int) -> Mix: ...


class NoPerturbation(Perturbation):
    """Plain DARTS: the weight step trains under the alpha map's weights."""

    def __init__(self, conf: NoPerturbationConf | None = None, objective: Optional[ArchObjective] = None) -> None:
        super().__init__(objective)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, epoch: int, epochs: int) -> Mix:
        return None


# ------------------------------------------------------------------------------------- simplex


def renorm(a: Tensor) -> Tensor:
    """The reference's way back onto the simplex, per row: clamp to [0, 1], divide by the row sum.

    A row that clamps to all zeros puts its whole mass on the entry that was largest before clamping.
    """
    top = a.argmax(dim=-1, keepdim=True)
    out = a.clamp(0.0, 1.0)
    empty = out.sum(dim=-1, keepdim=True) == 0
    out = torch.where(empty, torch.zeros_like(out).scatter(-1, top, 1.0), out)
    return out / out.sum(dim=-1, keepdim=True)


def project_ball_simplex(v: Tensor, center: Tensor, eps: float, iters: int = 60) -> Tensor:
    """Euclidean projection of each row of ``v`` onto {a : a on the simplex, |a - center|_inf <= eps}.

    ``center`` must lie on the simplex, so the set is not empty. The projection is
    ``clamp(v - tau, lo, hi)`` with ``lo = max(0, center - eps)``, ``hi = min(1, center + eps)`` and
    the scalar ``tau`` per row that makes the row sum 1, found by bisection.
    """
    dtype = v.dtype
    v64, c64 = v.to(torch.float64), center.to(torch.float64)
    lo, hi = (c64 - eps).clamp_min(0.0), (c64 + eps).clamp_max(1.0)
    t_lo = (v64 - hi).min(dim=-1, keepdim=True).values  # sum at t_lo is sum(hi) >= 1
    t_hi = (v64 - lo).max(dim=-1, keepdim=True).values  # sum at t_hi is sum(lo) <= 1
    for _ in range(iters):
        mid = (t_lo + t_hi) / 2
        above = torch.minimum(torch.maximum(v64 - mid, lo), hi).sum(dim=-1, keepdim=True) > 1
        t_lo, t_hi = torch.where(above, mid, t_lo), torch.where(above, t_hi, mid)
    out = torch.minimum(torch.maximum(v64 - (t_lo + t_hi) / 2, lo), hi)
    return out.to(dtype)


def back_on_simplex(a: Tensor, center: Tensor, eps: float, mode: str) -> Tensor:
    return renorm(a) if mode == "renorm" else project_ball_simplex(a, center, eps)


def uniform_noise(like: Tensor, eps: float) -> Tensor:
    """U(-eps, eps) of ``like``'s shape, drawn on the CPU generator and moved to ``like``'s device."""
    noise = torch.rand(like.shape, dtype=torch.float64) * (2 * eps) - eps
    return noise.to(device=like.device, dtype=like.dtype)


# ------------------------------------------------------------------------------------- epsilon


def epsilon_at(cfg: RandomConf, epoch: int, epochs: int) -> float:
    """The linear epsilon ramp from ``epsilon_start`` towards ``epsilon``.

    ``code``: start + (max - start) * epoch / epochs, as released (the last epoch stays short of
    the maximum); ``to_max``: reaches ``epsilon`` exactly in the last epoch.
    """
    span = cfg.epsilon - cfg.epsilon_start
    if cfg.epsilon_ramp == "to_max":
        return cfg.epsilon_start + span * epoch / max(epochs - 1, 1)
    return cfg.epsilon_start + span * epoch / epochs


def _as_weights(mix: dict[str, Tensor]) -> dict[str, Tensor]:
    """Leaves cut off from the alphas that still require grad: the weight step then runs every op,
    also one whose perturbed weight is exactly 0 (the supernet skips those only under a fixed,
    gradient-free architecture), so its weights keep their momentum and weight decay, as released."""
    return {k: v.detach().requires_grad_(True) for k, v in mix.items()}


def _clean_mix(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in model.mixing_weights().items()}


class RandomSmoothing(Perturbation):
    """SDARTS-RS: the weight step trains under A + U(-eps, eps), put back on the simplex."""

    def __init__(self, cfg: RandomConf | None = None, objective: Optional[ArchObjective] = None) -> None:
        super().__init__(objective)
        self.cfg = cfg or RandomConf()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, epoch: int, epochs: int) -> Mix:
        eps = epsilon_at(self.cfg, epoch, epochs)
        with torch.no_grad():
            mix = {k: back_on_simplex(a + uniform_noise(a, eps), a, eps, self.cfg.simplex)
                   for k, a in _clean_mix(model).items()}
        return _as_weights(mix)


def pgd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = 7,
    step_size: Optional[float] = None,
    random_start: bool = True,
    simplex: str = "renorm",
    objective: Optional[ArchObjective] = None,
) -> tuple[dict[str, Tensor], bool]:
    """L-infinity PGD on the mixing weights, maximising the loss of (x, y); returns (mix, kept).

    Runs with the model in eval mode (BatchNorm uses its running statistics, which stay as they
    are; skip dropout is off). Each step moves by ``step_size`` (2 eps / steps by default) along the
    sign of the gradient with respect to the mixing weights, clamps back into the ball around the
    clean weights and puts each row back on the simplex. If the final loss is below the clean
    loss, the clean weights are returned and ``kept`` is False. Weight gradients are never
    accumulated (gradients are taken with ``torch.autograd.grad`` with respect to the mix only).
    """
    step = 2 * eps / steps if step_size is None else step_size
    loss_of = objective or ArchObjective()
    was_training = model.training
    model.eval()
    try:
        clean = _clean_mix(model)
        with torch.no_grad():
            loss0 = float(loss_of(model, x, y, clean).total)
            if random_start:
                mix = {k: back_on_simplex(a + uniform_noise(a, eps), a, eps, simplex) for k, a in clean.items()}
            else:
                mix = {k: a.clone() for k, a in clean.items()}
        keys = list(mix)
        for _ in range(steps):
            leaves = {k: mix[k].detach().requires_grad_(True) for k in keys}
            loss = loss_of(model, x, y, leaves).total
            grads = torch.autograd.grad(loss, [leaves[k] for k in keys])
            with torch.no_grad():
                for k, g in zip(keys, grads):
                    a = leaves[k] + step * g.sign()
                    a = clean[k] + (a - clean[k]).clamp(-eps, eps)
                    mix[k] = back_on_simplex(a, clean[k], eps, simplex)
        with torch.no_grad():
            loss1 = float(loss_of(model, x, y, mix).total)
        if loss0 > loss1:
            return clean, False
        return {k: v.detach() for k, v in mix.items()}, True
    finally:
        model.train(was_training)


class AdversarialPGD(Perturbation):
    """SDARTS-ADV: the weight step trains under the PGD perturbation of A found on its own batch."""

    def __init__(self, cfg: AdversarialConf | None = None, objective: Optional[ArchObjective] = None) -> None:
        super().__init__(objective)
        self.cfg = cfg or AdversarialConf()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, epoch: int, epochs: int) -> Mix:
        c = self.cfg
        mix, _ = pgd_attack(model, x, y, epsilon_at(c, epoch, epochs), c.pgd_steps, c.pgd_step_size,
                            c.pgd_random_start, c.simplex, self.objective)
        return _as_weights(mix)


