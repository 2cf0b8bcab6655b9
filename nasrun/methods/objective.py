"""The architecture objective: the loss of the supernet under given mixing weights, plus a regulariser.

Every estimator and perturbation evaluates the supernet through :class:`ArchObjective`, so the
loss is written once. The mixing weights default to the supernet's own alpha map; the map may
declare a regulariser on them (NASP's parameter-size term), which is added here. The forward runs in
the run's precision (:class:`~nasrun.train.precision.Numerics`); the loss is taken of fp32 logits (fp64 ones
under ``precision=fp64``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.train.precision import FP32, Numerics, upcast

Mix = dict[str, Tensor]


@dataclass
class ObjectiveValue:
    """``total`` is what gradients are taken of; ``loss`` is the cross-entropy alone (what is logged)."""

    total: Tensor
    loss: Tensor
    logits: Tensor
    stats: dict[str, float] = field(default_factory=dict)

    def correct(self, y: Tensor) -> int:
        return int((self.logits.argmax(1) == y).sum())


class ArchObjective:
    """L(w, alpha) on a batch: cross-entropy of the supernet under ``mix`` (+ the alpha map's regulariser)."""

    def __init__(self, numerics: Numerics = FP32) -> None:
        self.numerics = numerics

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, mix: Optional[Mix] = None) -> ObjectiveValue:
        weights = model.mixing_weights() if mix is None else mix
        with self.numerics.autocast(x.device):
            logits = upcast(model(self.numerics.inputs(x), weights))
        loss = F.cross_entropy(logits, y)
        reg = model.alpha_map.regulariser(model, weights) if model.alpha_map is not None else None
        if reg is None:
            return ObjectiveValue(loss, loss, logits)
        return ObjectiveValue(loss + reg, loss, logits, {"arch_reg": float(reg.detach())})
