"""NASP: proximal iterations on a discrete architecture (Yao, Xu, Tu, Zhu, AAAI 2020).

NASP keeps the continuous alphas in the box [0, 1] (no softmax anywhere) and runs both steps of an
iteration on the discrete architecture given by the proximal step ``prox_C1``: on every edge a
one-hot row on its largest alpha. In nasrun it is three pieces of the one search loop:

- the ``proximal`` estimator: the validation loss (plus the optional parameter-size regulariser)
  at the discrete architecture, with every op of every edge executed, so each alpha gets the
  gradient with respect to its entry of the one-hot matrix; the architecture optimiser applies
  it to the continuous alphas, and :meth:`Proximal.after_step` clips them to [0, 1] (``prox_C2``);
- the ``discrete`` perturbation: the weight step trains under the detached one-hot architecture.
  A mixed op skips ops whose weight is exactly zero, so only the selected op of each edge runs
  (a single path, which is where NASP's speed comes from);
- the supernet option ``alpha_map=argmax``: evaluation during search uses the discrete
  architecture too, and the genotype and ``alphas.npz`` read the raw alphas (see below).

Choices (spec/methods.md §7):

- ``none`` never wins the projection: the derived genotype cannot pick it, so the trained
  single-path network is exactly the architecture the genotype describes (minus the edges the
  genotype drops). Ties go to the lower op index, as in the genotype derivation; with the
  reference initialisation (every alpha 0.5) the first iteration therefore starts from the first
  non-``none`` op everywhere, and the first architecture step breaks the ties.
- Every edge keeps its argmax op (the paper's C1). The released code additionally zeroes all but
  the two strongest incoming edges of each node during search; nasrun does not.
- The released code derives its final genotype from softmax(alpha). Softmax keeps each edge's
  argmax but can reorder edges of a node, so that genotype may keep other edges than the ones
  the search-time projection ranks highest; nasrun ranks the raw alphas instead, consistently
  with the projection.
- The regulariser (``method.param_reg``, the released ``--l2``, 0 = off) is
  ``param_reg * sum_{e,k} alpha_bar_normal[e,k]^2 * p_k / sum_j p_j`` on the normal cell only,
  with ``p_k`` the parameter count of op k computed from nasrun's own op definitions at the
  supernet's width; like the loss it is evaluated at the discrete architecture.
"""

from __future__ import annotations

from functools import lru_cache
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.methods.estimators import ArchBatch, ArchGrad
from nasrun.supernet.projection import CELLS, column_ops, discrete_architecture, none_mask, project, straight_through


def clip_to_box(model: nn.Module) -> None:
    """prox_C2: clip the alphas (not PC-DARTS' edge betas, which are softmaxed) to [0, 1] in place."""
    with torch.no_grad():
        for kind in CELLS:
            getattr(model, f"alphas_{kind}").clamp_(0.0, 1.0)


@lru_cache(maxsize=None)
def _op_params(name: str, C: int) -> int:
    from nasrun.spaces.ops import OPS

    return sum(p.numel() for p in OPS[name](C, 1, False).parameters())


def op_param_fractions(model: nn.Module, kind: str = "normal") -> Tensor:
    """``p_k / sum_j p_j`` per alpha column (per edge): op k's share of the parameters of all ops."""
    names = column_ops(model, kind)
    vocabulary = list(model.ops)
    total = sum(_op_params(name, model.C) for name in vocabulary)
    alpha = getattr(model, f"alphas_{kind}")
    table = [[_op_params(name, model.C) / max(total, 1) for name in row] for row in names]
    return torch.tensor(table, dtype=alpha.dtype, device=alpha.device)


class Proximal:
    """NASP's architecture step: the gradient at the discrete architecture, then the box [0, 1].

    One full supernet pass on the validation batch with every op executed (the one-hot weights
    carry gradient, so a mixed op runs all of its ops). The loop's optimiser applies the returned
    gradient to the continuous alphas; :meth:`after_step` then clips them to the box.
    """

    passes = 1

    def __init__(self, param_reg: float = 0.0) -> None:
        self.param_reg = param_reg

    def __call__(self, model: nn.Module, batch: ArchBatch) -> ArchGrad:
        mix = discrete_architecture(model, differentiable=True)
        logits = model(batch.x_val, mix)
        loss = F.cross_entropy(logits, batch.y_val)
        objective = loss
        stats: dict[str, float] = {}
        if self.param_reg > 0:
            reg = self.param_reg * (mix["normal"] ** 2 * op_param_fractions(model)).sum()
            objective = loss + reg
            stats["param_reg"] = float(reg.detach())
        arch = model.arch_parameters()
        grads = torch.autograd.grad(objective, arch, allow_unused=True)
        grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, arch)]
        correct = int((logits.argmax(1) == batch.y_val).sum())
        return ArchGrad(grads, float(loss.detach()), correct, stats)

    def after_step(self, model: nn.Module) -> None:
        clip_to_box(model)


def discrete_perturbation(model: nn.Module, x: Tensor, y: Tensor, epoch: int, epochs: int) -> dict[str, Tensor]:
    """NASP's weight step: train the single-path network of the projected (one-hot) architecture."""
    return discrete_architecture(model, differentiable=False)


__all__ = ["Proximal", "clip_to_box", "column_ops", "discrete_architecture", "discrete_perturbation", "none_mask",
           "op_param_fractions", "project", "straight_through"]
