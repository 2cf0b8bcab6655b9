"""Architecture-gradient estimators (first order, second order, amended).

Each estimator returns d L_val / d alpha for the alphas of a supernet, computed with fresh gradient
calls (:func:`~nasrun.methods.gradients.grad`, never read from ``.grad``, which may hold a stale weight
gradient; under torchrun they are the global batch's).
The search loop then hands the result to the architecture optimiser; the estimator never steps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from nasrun.methods.gradients import grad
from nasrun.methods.objective import ArchObjective
from nasrun.config.options import AmendedConf, FirstOrderConf, SecondOrderConf
from nasrun.train.precision import full_precision


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


class Estimator(ABC):
    """Returns the architecture gradient for one step, or None when it makes no step this time.

    Every estimator evaluates the supernet through its :class:`ArchObjective`. The hooks below
    default to doing nothing: ``after_step`` runs after every architecture step (NASP clips the
    alphas to its box there); ``state_dict`` / ``load_state_dict`` carry state across a resume
    (ZARTS' sampler).
    """

    passes: int = 1

    def __init__(self, objective: Optional[ArchObjective] = None) -> None:
        self.objective = objective or ArchObjective()

    @abstractmethod
    def __call__(self, model: nn.Module, batch: ArchBatch) -> Optional[ArchGrad]: ...

    def after_step(self, model: nn.Module) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The objective's value on a batch (what the products and differences differentiate)."""
        return self.objective(model, x, y).total


def apply_arch_step(model: nn.Module, arch: ArchGrad, optimizer: torch.optim.Optimizer,
                    estimator: Estimator, grad_clip: Optional[float] = None) -> None:
    """The one way an architecture step is applied: an estimator's own update, or its gradient through the optimiser."""
    if arch.update is not None:
        with torch.no_grad():
            for p, u in zip(model.arch_parameters(), arch.update):
                p.add_(u)
    else:
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(model.arch_parameters(), arch.grads):
            p.grad = g.detach()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.arch_parameters(), grad_clip)
        optimizer.step()
    estimator.after_step(model)


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


class FirstOrder(Estimator):
    """DARTS first order: the gradient of the validation loss at the current weights."""

    passes = 1

    def __init__(self, conf: FirstOrderConf | None = None, objective: Optional[ArchObjective] = None) -> None:
        super().__init__(objective)

    def __call__(self, model: nn.Module, batch: ArchBatch) -> ArchGrad:
        value = self.objective(model, batch.x_val, batch.y_val)
        params = model.arch_parameters()
        # a cell type the loss does not reach (GDAS: every path through its cells picked `none`) gets a zero
        # gradient, as the released code's zero op (x * 0) gives it
        grads = [torch.zeros_like(p) if g is None else g
                 for g, p in zip(grad(value.total, params, batch=len(batch.y_val), allow_unused=True), params)]
        stats = {**two_term_stats(list(grads), None), **value.stats}
        return ArchGrad(list(grads), float(value.loss.detach()), value.correct(batch.y_val), stats)


def virtual_step(opt: torch.optim.SGD, weights: list[Tensor], saved: list[Tensor], grads: Any, lr: float) -> None:
    """Move ``weights`` (saved as ``saved``) by the step the SGD optimiser would take: its momentum
    buffer and weight decay included, step size ``lr`` (DARTS' unrolled weights w')."""
    group = opt.param_groups[0]
    mu, wd, nesterov = group["momentum"], group["weight_decay"], group.get("nesterov", False)
    with torch.no_grad():
        for w, gi, w0 in zip(weights, grads, saved):
            buf = opt.state.get(w, {}).get("momentum_buffer")
            raw = step = (gi if gi is not None else torch.zeros_like(w)) + wd * w0
            if buf is not None:
                step = step + mu * buf  # the momentum buffer after this step
            if nesterov:  # torch's SGD(nesterov=True): the gradient plus momentum times the new buffer
                step = raw + mu * step
            w.copy_(w0 - lr * step)


class SecondOrder(Estimator):
    """DARTS second order (unrolled), as the reference code computes it.

    The virtual step reproduces the real SGD step (momentum buffer and weight decay, step size = the
    current weight learning rate xi). The mixed product B v' is taken around the *current* weights w:
    by a central finite difference with epsilon = r / ||v'|| (``hvp="finite_difference"``, the
    reference computation), or exactly by double backward, d/d alpha [grad_w L_tr(w, alpha) . v']
    (``hvp="exact"``: one forward, a graph-building backward and one double backward; no radius).
    Weights are restored from a saved copy, not by adding and subtracting, so no rounding drift
    accumulates; BN running statistics are left untouched. Under ``precision=bf16`` the training loss
    of the virtual step and of B v' is fp32 (:meth:`loss`); only the validation pass at w' is bf16.
    """

    passes = 4

    def __init__(self, conf: SecondOrderConf | None = None, objective: Optional[ArchObjective] = None) -> None:
        super().__init__(objective)
        conf = conf or SecondOrderConf()
        self.hvp, self.radius = conf.hvp, conf.fd_radius

    @full_precision()
    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The training loss in fp32: the virtual step and the mixed product must not round to bf16."""
        return super().loss(model, x, y)

    def __call__(self, model: nn.Module, batch: ArchBatch) -> ArchGrad:
        weights = model.weight_parameters()
        alphas = model.arch_parameters()
        opt = batch.weight_optimizer
        xi = batch.lr
        saved = [w.detach().clone() for w in weights]
        with preserved_buffers(model):
            train_loss = self.loss(model, batch.x_train, batch.y_train)
            g = grad(train_loss, weights, batch=len(batch.y_train), allow_unused=True)
            virtual_step(opt, weights, saved, g, xi)
            value = self.objective(model, batch.x_val, batch.y_val)
            grads = grad(value.total, alphas + weights, batch=len(batch.y_val), allow_unused=True)
            direct = list(grads[: len(alphas)])
            v = [gi if gi is not None else torch.zeros_like(w) for gi, w in zip(grads[len(alphas) :], weights)]
            if self.hvp == "exact":
                _restore(weights, saved)  # B v' at w, the point the finite difference is centred on
                mixed = exact_mixed(model, weights, v, batch.x_train, batch.y_train, self.loss)
            else:
                mixed = finite_difference_mixed(model, weights, saved, v, batch.x_train, batch.y_train,
                                                self.radius, self.loss)
            _restore(weights, saved)
        second = [-xi * m for m in mixed]
        out = [d + t for d, t in zip(direct, second)]
        return ArchGrad(out, float(value.loss.detach()), value.correct(batch.y_val), two_term_stats(direct, second))


class Amended(Estimator):
    """Amended-DARTS: g1 - eta * B (H v), with v = d L_val / d w taken fresh at the current weights.

    H v and B u are evaluated at the current weights on the step's training batch, either by two
    chained central differences (each with epsilon = radius / ||direction||, as in the reference
    computation) or exactly by double backward. eta = 0 skips the products, so the trajectory is
    exactly first-order DARTS. The products' forwards leave BN running statistics untouched, and run
    in fp32 under ``precision=bf16`` (the radius would be below bf16's resolution).
    """

    passes = 5

    def __init__(self, conf: AmendedConf | None = None, objective: Optional[ArchObjective] = None) -> None:
        super().__init__(objective)
        conf = conf or AmendedConf()
        self.eta, self.hvp, self.radius = conf.eta, conf.hvp, conf.fd_radius

    def __call__(self, model: nn.Module, batch: ArchBatch) -> ArchGrad:
        weights = model.weight_parameters()
        alphas = model.arch_parameters()
        value = self.objective(model, batch.x_val, batch.y_val)
        grads = grad(value.total, alphas + weights, batch=len(batch.y_val), allow_unused=True)
        g1 = list(grads[: len(alphas)])
        correct = value.correct(batch.y_val)
        if self.eta == 0:
            return ArchGrad(g1, float(value.loss.detach()), correct, two_term_stats(g1, None))
        v = [g if g is not None else torch.zeros_like(w) for g, w in zip(grads[len(alphas) :], weights)]
        z = amended_product(model, v, batch.x_train, batch.y_train, self.hvp, self.radius, self.loss)
        second = [-self.eta * zi for zi in z]
        out = [g + t for g, t in zip(g1, second)]
        return ArchGrad(out, float(value.loss.detach()), correct, two_term_stats(g1, second))


@full_precision()
def amended_product(model: nn.Module, v: list[Tensor], x: Tensor, y: Tensor, hvp: str, radius: float,
                    loss_fn: Optional[LossFn] = None) -> list[Tensor]:
    """B (H v) of the training loss at the current weights, by finite differences or double backward (in fp32)."""
    loss_fn = _total(loss_fn or ArchObjective())
    weights = model.weight_parameters()
    with preserved_buffers(model):
        if hvp == "exact":
            loss = loss_fn(model, x, y)
            g = grad(loss, weights, batch=len(y), create_graph=True)
            u = grad(g, weights, batch=len(y), grad_outputs=v, retain_graph=True)
            return grad(g, model.arch_parameters(), batch=len(y), grad_outputs=[ui.detach() for ui in u])
        saved = [w.detach().clone() for w in weights]
        try:
            u = finite_difference_hvp(model, weights, saved, v, x, y, radius, loss_fn)
            return finite_difference_mixed(model, weights, saved, u, x, y, radius, loss_fn)
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


LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _total(fn: Callable[..., Any]) -> LossFn:
    """A loss function returning a tensor, from one that may return an :class:`ObjectiveValue`."""

    def loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        out = fn(model, x, y)
        return out if isinstance(out, Tensor) else out.total

    return loss


@full_precision()
def central_difference(
    model: nn.Module,
    weights: list[Tensor],
    center: list[Tensor],
    direction: list[Tensor],
    x: Tensor,
    y: Tensor,
    radius: float,
    wrt: list[Tensor],
    loss_fn: Optional[LossFn] = None,
) -> list[Tensor]:
    """d/de grad_wrt L(center + e u) at e = 0, as [grad L(w + e u) - grad L(w - e u)] / 2e, e = radius / ||u||.

    With ``wrt`` the weights this is H u, with ``wrt`` the alphas it is B u. Leaves the weights
    perturbed; the caller restores them.
    """
    loss_fn = _total(loss_fn or ArchObjective())
    eps = radius / (float(global_norm(direction)) + 1e-12)
    out = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for w, c, d in zip(weights, center, direction):
                w.copy_(c + sign * eps * d)
        loss = loss_fn(model, x, y)
        g = grad(loss, wrt, batch=len(y), allow_unused=True)
        out.append([gi if gi is not None else torch.zeros_like(t) for gi, t in zip(g, wrt)])
    return [(p - m) / (2 * eps) for p, m in zip(*out)]


def finite_difference_hvp(model, weights, center, direction, x, y, radius, loss_fn=None) -> list[Tensor]:
    """H u of the training loss (differences of weight gradients)."""
    return central_difference(model, weights, center, direction, x, y, radius, weights, loss_fn)


def finite_difference_mixed(model, weights, center, direction, x, y, radius, loss_fn=None) -> list[Tensor]:
    """B u of the training loss (differences of architecture gradients)."""
    return central_difference(model, weights, center, direction, x, y, radius, model.arch_parameters(), loss_fn)


@full_precision()
def exact_mixed(model: nn.Module, weights: list[Tensor], direction: list[Tensor], x: Tensor, y: Tensor,
                loss_fn: Optional[LossFn] = None) -> list[Tensor]:
    """B u of the training loss at the current weights, exactly: d/d alpha [grad_w L(w, alpha) . u].

    Builds the graph of the weight gradient (create_graph), then back-propagates its product with
    the (detached) direction to the alphas (double backward). Weights whose gradient is absent or
    constant contribute nothing; alphas the loss does not reach get zeros.
    """
    loss_fn = _total(loss_fn or ArchObjective())
    alphas = model.arch_parameters()
    loss = loss_fn(model, x, y)
    g = grad(loss, weights, batch=len(y), create_graph=True, allow_unused=True)
    pairs = [(gi, d.detach()) for gi, d in zip(g, direction) if gi is not None and gi.requires_grad]
    out = grad([gi for gi, _ in pairs], alphas, batch=len(y), grad_outputs=[d for _, d in pairs],
                              allow_unused=True)
    return [o if o is not None else torch.zeros_like(a) for o, a in zip(out, alphas)]


def _restore(weights: list[Tensor], saved: list[Tensor]) -> None:
    with torch.no_grad():
        for w, s in zip(weights, saved):
            w.copy_(s)


