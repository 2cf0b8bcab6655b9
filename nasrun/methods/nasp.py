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

Choices (NASP, Yao et al., AAAI 2020; xujinfan/NASP-codes):

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

import torch
from torch import Tensor, nn

from nasrun.methods.alpha_maps import op_param_fractions
from nasrun.methods.estimators import ArchBatch, ArchGrad, Estimator
from nasrun.methods.objective import ArchObjective
from nasrun.methods.perturbations import Perturbation
from nasrun.config.options import DiscreteConf, ProximalConf
from nasrun.supernet.projection import column_ops, discrete_architecture, kinds_of, none_mask, project, straight_through


def clip_to_box(model: nn.Module) -> None:
    """prox_C2: clip the alphas (not PC-DARTS' edge betas, which are softmaxed) to [0, 1] in place."""
    with torch.no_grad():
        for kind in kinds_of(model):
            getattr(model, f"alphas_{kind}").clamp_(0.0, 1.0)


class Proximal(Estimator):
    """NASP's architecture step: the gradient at the discrete architecture, then the box [0, 1].

    One full supernet pass on the validation batch under the alpha map's weights (with
    ``alpha_map=argmax`` the straight-through one-hot matrix, so a mixed op runs all of its ops and
    every alpha gets the gradient of its entry). The loop's optimiser applies the returned gradient
    to the continuous alphas; :meth:`after_step` then clips them to the box.
    """

    passes = 1

    def __init__(self, conf: ProximalConf | None = None, objective: ArchObjective | None = None) -> None:
        super().__init__(objective)

    def __call__(self, model: nn.Module, batch: ArchBatch) -> ArchGrad:
        value = self.objective(model, batch.x_val, batch.y_val)
        arch = model.arch_parameters()
        grads = torch.autograd.grad(value.total, arch, allow_unused=True)
        grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, arch)]
        return ArchGrad(grads, float(value.loss.detach()), value.correct(batch.y_val), value.stats)

    def after_step(self, model: nn.Module) -> None:
        clip_to_box(model)


class Discrete(Perturbation):
    """NASP's weight step: train the single-path network of the projected (one-hot) architecture."""

    def __init__(self, conf: DiscreteConf | None = None, objective: ArchObjective | None = None) -> None:
        super().__init__(objective)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, epoch: int, epochs: int) -> dict[str, Tensor]:
        return discrete_architecture(model, differentiable=False)


__all__ = ["Discrete", "Proximal", "clip_to_box", "column_ops", "discrete_architecture", "none_mask",
           "op_param_fractions", "project", "straight_through"]
