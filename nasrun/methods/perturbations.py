"""Weight-step perturbations of the architecture: which mixing weights the weight step trains under.

The architecture step always sees the clean softmax(alpha). A perturbation returns the mixing
weights ({"normal": (E, K), "reduce": (E, K)}, detached) that the weight step uses instead, or None
for the clean ones. The alphas themselves are never modified, so nothing needs restoring.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol

from torch import Tensor, nn

from nasrun.config import MethodConf

Mix = Optional[dict[str, Tensor]]


class Perturbation(Protocol):
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, epoch: int, epochs: int) -> Mix: ...


def no_perturbation(model: nn.Module, x: Tensor, y: Tensor, epoch: int, epochs: int) -> Mix:
    """Plain DARTS: the weight step trains under softmax(alpha)."""
    return None


PERTURBATIONS: dict[str, Callable[[MethodConf], Perturbation]] = {
    "none": lambda cfg: no_perturbation,
    "discrete": lambda cfg: _discrete(),
}


def _discrete() -> Perturbation:
    """NASP: the weight step trains the single path of the projected one-hot architecture."""
    from nasrun.methods.nasp import discrete_perturbation  # imported late: nasp builds on the estimators

    return discrete_perturbation


def make_perturbation(cfg: MethodConf) -> Perturbation:
    return PERTURBATIONS[cfg.perturbation](cfg)
