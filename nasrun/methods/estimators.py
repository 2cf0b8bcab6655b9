"""Architecture-gradient estimators (first order, second order, amended).

Each estimator returns d L_val / d alpha for the alphas of a supernet, computed with fresh
``torch.autograd.grad`` calls (never read from ``.grad``, which may hold a stale weight gradient).
The search loop then hands the result to the architecture optimiser; the estimator never steps.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.config import MethodConf


@dataclass
class ArchBatch:
    """What one architecture step sees: the step's training batch, a validation batch, the weight optimiser."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    weight_optimizer: torch.optim.SGD
    lr: float
    epoch: int = 0
    epochs: int = 1
    # the step's index within the epoch, and the loop's live data streams, for estimators that act
    # every few steps or need more batches than one (ZARTS fine-tunes on batches of its own)
    step: int = 0
    train_stream: Any = None
    val_stream: Any = None


@dataclass
class ArchGrad:
    """Estimated alpha gradients plus what the loop logs (validation loss/accuracy at the evaluated point).

    ``update``: an estimator that moves the alphas by a rule of its own (ZARTS) gives the change to
    add to each of them here and ``grads=None``; the loop then adds it instead of stepping the
    architecture optimiser.
    """

    grads: Optional[list[Tensor]]
    val_loss: float
    val_correct: int
    stats: dict[str, float] = field(default_factory=dict)
    update: Optional[list[Tensor]] = None


class Estimator(Protocol):
    """Returns the architecture gradient for one step, or None when it makes no step this time.

    Optional extras the loop uses when an estimator has them: ``after_step(model)``, called after
    every architecture step (NASP clips the alphas to its box there), and ``state_dict()`` /
    ``load_state_dict(state)`` for state that must survive a resume (ZARTS' sampler).
    """

    passes: int

    def __call__(self, model: nn.Module, batch: ArchBatch) -> Optional[ArchGrad]: ...


def _loss(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    logits = model(x)
    return F.cross_entropy(logits, y), logits


@contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Keep BatchNorm running statistics as they were: extra passes of an estimator must not move them."""
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved):
                b.copy_(s)


def global_norm(tensors: list[Tensor]) -> Tensor:
    return torch.sqrt(sum((t.detach() ** 2).sum() for t in tensors))


class FirstOrder:
    """DARTS first order: the gradient of the validation loss at the current weights."""

    passes = 1

    def __call__(self, model: nn.Module, batch: ArchBatch) -> ArchGrad:
        loss, logits = _loss(model, batch.x_val, batch.y_val)
        grads = torch.autograd.grad(loss, model.arch_parameters())
        correct = int((logits.argmax(1) == batch.y_val).sum())
        return ArchGrad(list(grads), float(loss.detach()), correct, two_term_stats(list(grads), None))


class SecondOrder:
    """DARTS second order (unrolled), as the reference code computes it.

    The virtual step reproduces the real SGD step (momentum buffer and weight decay, step size = the
    current weight learning rate xi). The mixed product B v' is a central finite difference around the
    *current* weights w with epsilon = r / ||v'||. Weights are restored from a saved copy, not by
    adding and subtracting, so no rounding drift accumulates; BN running statistics are left untouched.
    """

    passes = 4

    def __init__(self, radius: float = 0.01) -> None:
        self.radius = radius

    def __call__(self, model: nn.Module, batch: ArchBatch) -> ArchGrad:
        weights = model.weight_parameters()
        alphas = model.arch_parameters()
        opt = batch.weight_optimizer
        group = opt.param_groups[0]
        mu, wd, xi = group["momentum"], group["weight_decay"], batch.lr
        saved = [w.detach().clone() for w in weights]
        with preserved_buffers(model):
            train_loss, _ = _loss(model, batch.x_train, batch.y_train)
            g = torch.autograd.grad(train_loss, weights, allow_unused=True)
            with torch.no_grad():
                for w, gi, w0 in zip(weights, g, saved):
                    buf = opt.state.get(w, {}).get("momentum_buffer")
                    step = (gi if gi is not None else torch.zeros_like(w)) + wd * w0
                    if buf is not None:
                        step = step + mu * buf
                    w.copy_(w0 - xi * step)
            val_loss, logits = _loss(model, batch.x_val, batch.y_val)
            grads = torch.autograd.grad(val_loss, alphas + weights, allow_unused=True)
            direct = list(grads[: len(alphas)])
            v = [gi if gi is not None else torch.zeros_like(w) for gi, w in zip(grads[len(alphas) :], weights)]
            mixed = finite_difference_mixed(model, weights, saved, v, batch.x_train, batch.y_train, self.radius)
            _restore(weights, saved)
        second = [-xi * m for m in mixed]
        out = [d + t for d, t in zip(direct, second)]
        correct = int((logits.argmax(1) == batch.y_val).sum())
        return ArchGrad(out, float(val_loss.detach()), correct, two_term_stats(direct, second))


class Amended:
    """Amended-DARTS: g1 - eta * B (H v), with v = d L_val / d w taken fresh at the current weights.

    H v and B u are evaluated at the current weights on the step's training batch, either by two
    chained central differences (each with epsilon = radius / ||direction||, as in the reference
    computation) or exactly by double backward. eta = 0 skips the products, so the trajectory is
    exactly first-order DARTS. The products' forwards leave BN running statistics untouched.
    """

    passes = 5

    def __init__(self, eta: float, hvp: str = "finite_difference", radius: float = 0.01) -> None:
        self.eta, self.hvp, self.radius = eta, hvp, radius

    def __call__(self, model: nn.Module, batch: ArchBatch) -> ArchGrad:
        weights = model.weight_parameters()
        alphas = model.arch_parameters()
        val_loss, logits = _loss(model, batch.x_val, batch.y_val)
        grads = torch.autograd.grad(val_loss, alphas + weights, allow_unused=True)
        g1 = list(grads[: len(alphas)])
        correct = int((logits.argmax(1) == batch.y_val).sum())
        if self.eta == 0:
            return ArchGrad(g1, float(val_loss.detach()), correct, two_term_stats(g1, None))
        v = [g if g is not None else torch.zeros_like(w) for g, w in zip(grads[len(alphas) :], weights)]
        z = amended_product(model, v, batch.x_train, batch.y_train, self.hvp, self.radius)
        second = [-self.eta * zi for zi in z]
        out = [g + t for g, t in zip(g1, second)]
        return ArchGrad(out, float(val_loss.detach()), correct, two_term_stats(g1, second))


def amended_product(model: nn.Module, v: list[Tensor], x: Tensor, y: Tensor, hvp: str, radius: float) -> list[Tensor]:
    """B (H v) of the training loss at the current weights, by finite differences or double backward."""
    weights = model.weight_parameters()
    with preserved_buffers(model):
        if hvp == "exact":
            loss, _ = _loss(model, x, y)
            g = torch.autograd.grad(loss, weights, create_graph=True)
            u = torch.autograd.grad(g, weights, grad_outputs=v, retain_graph=True)
            return list(torch.autograd.grad(g, model.arch_parameters(), grad_outputs=[ui.detach() for ui in u]))
        saved = [w.detach().clone() for w in weights]
        try:
            u = finite_difference_hvp(model, weights, saved, v, x, y, radius)
            return finite_difference_mixed(model, weights, saved, u, x, y, radius)
        finally:
            _restore(weights, saved)


def two_term_stats(first: list[Tensor], second: list[Tensor] | None) -> dict[str, float]:
    """Norms of the direct and the second-order term and the cosine between them (diagnostics)."""
    n1 = float(global_norm(first))
    if second is None:
        return {"g1_norm": n1, "second_norm": 0.0}
    n2 = float(global_norm(second))
    dot = float(sum((a.detach() * b.detach()).sum() for a, b in zip(first, second)))
    cos = dot / (n1 * n2) if n1 > 0 and n2 > 0 else 0.0
    return {"g1_norm": n1, "second_norm": n2, "cosine": cos}


def central_difference(
    model: nn.Module,
    weights: list[Tensor],
    center: list[Tensor],
    direction: list[Tensor],
    x: Tensor,
    y: Tensor,
    radius: float,
    wrt: list[Tensor],
) -> list[Tensor]:
    """d/de grad_wrt L(center + e u) at e = 0, as [grad L(w + e u) - grad L(w - e u)] / 2e, e = radius / ||u||.

    With ``wrt`` the weights this is H u, with ``wrt`` the alphas it is B u. Leaves the weights
    perturbed; the caller restores them.
    """
    eps = radius / (float(global_norm(direction)) + 1e-12)
    out = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for w, c, d in zip(weights, center, direction):
                w.copy_(c + sign * eps * d)
        loss, _ = _loss(model, x, y)
        g = torch.autograd.grad(loss, wrt, allow_unused=True)
        out.append([gi if gi is not None else torch.zeros_like(t) for gi, t in zip(g, wrt)])
    return [(p - m) / (2 * eps) for p, m in zip(*out)]


def finite_difference_hvp(model, weights, center, direction, x, y, radius) -> list[Tensor]:
    """H u of the training loss (differences of weight gradients)."""
    return central_difference(model, weights, center, direction, x, y, radius, wrt=weights)


def finite_difference_mixed(model, weights, center, direction, x, y, radius) -> list[Tensor]:
    """B u of the training loss (differences of architecture gradients)."""
    return central_difference(model, weights, center, direction, x, y, radius, wrt=model.arch_parameters())


def _restore(weights: list[Tensor], saved: list[Tensor]) -> None:
    with torch.no_grad():
        for w, s in zip(weights, saved):
            w.copy_(s)


ESTIMATORS: dict[str, Callable[[MethodConf], Estimator]] = {
    "first_order": lambda cfg: FirstOrder(),
    "second_order": lambda cfg: SecondOrder(cfg.fd_radius),
    "amended": lambda cfg: Amended(cfg.eta, cfg.hvp, cfg.fd_radius),
    "proximal": lambda cfg: _nasp().Proximal(cfg.param_reg),
    "mgs": lambda cfg: _zarts().make_mgs(cfg),
    "rs": lambda cfg: _zarts().make_rs(cfg),
    "gld": lambda cfg: _zarts().make_gld(cfg),
}


def _nasp():
    from nasrun.methods import nasp  # imported late: it builds on this module

    return nasp


def _zarts():
    from nasrun.methods import zarts

    return zarts


def make_estimator(cfg: MethodConf) -> Estimator:
    return ESTIMATORS[cfg.estimator](cfg)
