"""Alpha maps: how the alphas become the mixing weights of every edge, and what the genotype ranks.

- :class:`Softmax` (DARTS and most methods): softmax over each edge's ops; the genotype ranks the
  same weights.
- :class:`Argmax` (NASP): the one-hot projection on the largest alpha other than ``none``,
  straight-through so the gradient reaches the continuous alphas; the genotype ranks the raw
  alphas. Its regulariser is NASP's parameter-size term (``param_reg``, 0 = off).

A new map (DrNAS' Dirichlet, GDAS' Gumbel) is a class with the same four methods plus an option in
``nasrun.config.options.AXES['alpha_map']`` and a line in ``nasrun.methods.registry``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor, nn

from nasrun.config.options import ArgmaxConf, SoftmaxConf
from nasrun.supernet.projection import column_ops, discrete_architecture, kinds_of


class AlphaMap:
    """Base: alphas filled with ``init`` (None keeps the supernet's 1e-3 * N(0, 1)), softmax weights, no regulariser.

    ``single_path``: the map selects one op per edge, so the ops that did not run must keep no gradient (a
    fused supernet then keeps every op's parameters apart instead of stacking them). Each map reads it from
    its option, where the capability is declared (``nasrun.config.options``).
    """

    single_path = False

    def __init__(self, init: Optional[float] = None) -> None:
        self.init = init

    def initialise(self, model: nn.Module) -> None:
        if self.init is not None:
            with torch.no_grad():
                for kind in kinds_of(model):
                    getattr(model, f"alphas_{kind}").fill_(self.init)

    def weights(self, model: nn.Module) -> dict[str, Tensor]:
        """The differentiable mixing weights per cell type."""
        return model.softmax_weights()

    def ranking(self, model: nn.Module) -> dict[str, Tensor]:
        """What the genotype derivation and the alpha history read."""
        return self.weights(model)

    def regulariser(self, model: nn.Module, mix: dict[str, Tensor]) -> Optional[Tensor]:
        return None


class Softmax(AlphaMap):
    """softmax(alpha) per edge."""

    single_path = SoftmaxConf.single_path

    def __init__(self, conf: SoftmaxConf | None = None) -> None:
        super().__init__((conf or SoftmaxConf()).init)


@lru_cache(maxsize=None)
def _op_params(name: str, C: int) -> int:
    from nasrun.spaces.ops import OPS

    return sum(p.numel() for p in OPS[name](C, 1, False).parameters())


def op_param_fractions(model: nn.Module, kind: str = "normal") -> Tensor:
    """``p_k / sum_j p_j`` per alpha column (per edge): op k's share of the parameters of all ops."""
    names = column_ops(model, kind)
    total = sum(_op_params(name, model.C) for name in model.ops)
    alpha = getattr(model, f"alphas_{kind}")
    table = [[_op_params(name, model.C) / max(total, 1) for name in row] for row in names]
    return torch.tensor(table, dtype=alpha.dtype, device=alpha.device)


class Argmax(AlphaMap):
    """NASP's prox_C1: one op per edge (straight-through); the raw alphas are ranked."""

    single_path = ArgmaxConf.single_path  # one op per edge: NASP's weight step trains the chosen op of each edge

    def __init__(self, conf: ArgmaxConf | None = None) -> None:
        conf = conf or ArgmaxConf()
        super().__init__(conf.init)
        self.param_reg = conf.param_reg

    def weights(self, model: nn.Module) -> dict[str, Tensor]:
        return discrete_architecture(model, differentiable=True)

    def ranking(self, model: nn.Module) -> dict[str, Tensor]:
        return {kind: getattr(model, f"alphas_{kind}") for kind in kinds_of(model)}

    def regulariser(self, model: nn.Module, mix: dict[str, Tensor]) -> Optional[Tensor]:
        """``param_reg * sum_{e,k} mix_normal[e,k]^2 * p_k / sum_j p_j`` (NASP's size term; normal cells only)."""
        if self.param_reg <= 0:
            return None
        kinds = getattr(model, "normal_kinds", ["normal"])
        return self.param_reg * sum((mix[k] ** 2 * op_param_fractions(model, k)).sum() for k in kinds)
