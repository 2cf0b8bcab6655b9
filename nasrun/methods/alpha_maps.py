"""Alpha maps: how the alphas become the mixing weights of every edge, and what the genotype ranks.

- :class:`Softmax` (DARTS and most methods): softmax over each edge's ops; the genotype ranks the
  same weights.
- :class:`Argmax` (NASP): the one-hot projection on the largest alpha other than ``none``,
  straight-through so the gradient reaches the continuous alphas; the genotype ranks the raw
  alphas. Its regulariser is NASP's parameter-size term (``param_reg``, 0 = off).

The sampling maps (DrNAS' Dirichlet, SNAS' and GDAS' Gumbel) live in :mod:`nasrun.methods.sampling_maps`.
A new map is a class with the same methods plus an option in ``nasrun.config.options.AXES['alpha_map']``
and a line in ``nasrun.methods.registry``.

The loop tells a map where the search is (:meth:`AlphaMap.begin_epoch`, :meth:`AlphaMap.begin_step`), for
temperatures, regulariser schedules and per-step samples. What the metrics and the stage logic read is
:meth:`AlphaMap.summary`, never a sample; the genotype reads :meth:`AlphaMap.ranking`.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator, Optional

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
        self.epoch, self.epochs = 0, 1

    def seed(self, seed: int) -> None:
        """Seed the map's own random draws (maps that sample)."""

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """The search starts epoch ``epoch`` (from 0) of ``epochs`` of its stage: temperatures, schedules."""
        self.epoch, self.epochs = epoch, epochs

    def begin_step(self) -> None:
        """A search step starts (a map that samples once per step draws its sample for it)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (maps without state ignore it)."""

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Inside, every forward sees one draw, and the map's own state is as before afterwards (a measurement
        that evaluates the loss many times, such as the Hessian eigenvalue, must not move the search)."""
        yield

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

    def summary(self, model: nn.Module) -> dict[str, Tensor]:
        """The deterministic mixing weights the metrics and the stage logic read (the weights, unless they are sampled)."""
        return self.weights(model)

    def regulariser(self, model: nn.Module, mix: dict[str, Tensor]) -> Optional[Tensor]:
        return None


class Softmax(AlphaMap):
    """softmax(alpha) per edge; with ``beta_decay`` > 0, beta-DARTS' regulariser on the raw alphas."""

    single_path = SoftmaxConf.single_path

    def __init__(self, conf: SoftmaxConf | None = None) -> None:
        conf = conf or SoftmaxConf()
        super().__init__(conf.init)
        self.beta_decay, self.beta_decay_epochs = conf.beta_decay, conf.beta_decay_epochs

    def beta_weight(self) -> float:
        """beta-DARTS' lambda at this epoch: ``beta_decay * epoch / beta_decay_epochs`` (epoch from 0).

        Sunshine-Ye/Beta-DARTS, nasbench201/train_search.py: ``0 + 50 * epoch / 100``, the 100 fixed
        whatever the number of epochs (so 49.5 after 100 epochs, 24.5 after 50).
        """
        return self.beta_decay * self.epoch / self.beta_decay_epochs

    def regulariser(self, model: nn.Module, mix: dict[str, Tensor]) -> Optional[Tensor]:
        """``lambda * mean_e logsumexp_k alpha_{e,k}`` over the edges of every cell type (beta-DARTS' beta-decay loss;
        Sunshine-Ye/Beta-DARTS, optimizers/darts/architect.py). None when off."""
        if self.beta_decay <= 0:
            return None
        rows = torch.cat([model.alphas(kind) for kind in kinds_of(model)])
        return self.beta_weight() * torch.logsumexp(rows, dim=-1).mean()


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
