"""Alpha maps that sample, and FairDARTS' sigmoid: the stable family's ways from alphas to mixing weights.

- :class:`Dirichlet` (DrNAS): ``theta_e ~ Dirichlet(ELU(alpha_e) + 1)``, a pathwise (reparameterised) sample
  per edge; optionally DrNAS' KL term to Dirichlet(1). The genotype and the metrics read softmax(alpha),
  as the released code parses it.
- :class:`Gumbel` (SNAS, as the peers run it): ``softmax((alpha + g) / tau)``, ``g`` standard Gumbel noise.
- :class:`GumbelHard` (GDAS): ``p = softmax((log_softmax(alpha) + g) / tau)``, forward one-hot on argmax p with
  the straight-through gradient of p; only the chosen op of each edge runs.
- :class:`Sigmoid` (FairDARTS): ``sigmoid(alpha)``, one gate per op with no competition, and its zero-one loss.

A sampling map draws from a generator of its own (seeded from the run's seed, kept in the checkpoint,
so a resumed search draws what it would have drawn). ``sample=forward`` draws afresh in every forward,
as the released code does (the architecture step and the weight step see different samples);
``sample=step`` draws once per search step and every pass of that step reuses the draw.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.methods.alpha_maps import AlphaMap
from nasrun.supernet.projection import kinds_of

class SampledMap(AlphaMap):
    """Base of the sampling maps: the generator, the draw schedule and the deterministic summary (softmax)."""

    def __init__(self, init: Optional[float], sample: str) -> None:
        super().__init__(init)
        self.sample = sample
        self.generator = torch.Generator(device="cpu")
        self._step_state: Optional[Tensor] = None

    def seed(self, seed: int) -> None:
        """A stream of the map's own, apart from the weights' initialisation and the batches."""
        self.generator.manual_seed(seed * 1000 + 3)

    def begin_step(self) -> None:
        if self.sample == "step":  # every pass of this step redraws from here: the same sample
            self._step_state = self.generator.get_state()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "epoch": self.epoch, "epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"].to("cpu", torch.uint8))
            self.epoch, self.epochs = int(state["epoch"]), int(state["epochs"])

    @contextmanager
    def frozen(self) -> Iterator[None]:
        saved = (self.sample, self._step_state, self.generator.get_state())
        self.sample = "step"
        self._step_state = self.generator.get_state()  # one draw, from where the search stands
        try:
            yield
        finally:
            self.sample, self._step_state = saved[0], saved[1]
            self.generator.set_state(saved[2])

    def weights(self, model: nn.Module) -> dict[str, Tensor]:
        if self.sample == "step" and self._step_state is not None:  # the step's draw again, from its start
            generator = torch.Generator(device="cpu")
            generator.set_state(self._step_state)
        else:
            generator = self.generator
        out = {kind: self.draw(model.alphas(kind), generator) for kind in kinds_of(model)}
        if generator is not self.generator:  # the own stream moves past the step's draw, for the next step
            self.generator.set_state(generator.get_state())
        return out

    def draw(self, alpha: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def ranking(self, model: nn.Module) -> dict[str, Tensor]:
        return model.softmax_weights()

    def summary(self, model: nn.Module) -> dict[str, Tensor]:
        return model.softmax_weights()


def gumbel_noise(alpha: Tensor, generator: torch.Generator) -> Tensor:
    """``-log(Exp(1))`` noise shaped like ``alpha``, drawn on the CPU (the same draws on every device)."""
    e = torch.empty(alpha.shape, dtype=alpha.dtype).exponential_(generator=generator)
    return (-e.log()).to(alpha.device)


class Dirichlet(SampledMap):
    """DrNAS: ``Dirichlet(ELU(alpha) + 1).rsample()`` per edge, one sample per cell type per draw."""

    def __init__(self, conf: Any) -> None:
        super().__init__(conf.init, conf.sample)
        self.kl = conf.kl

    def draw(self, alpha: Tensor, generator: torch.Generator) -> Tensor:
        concentration = F.elu(alpha) + 1
        with torch.random.fork_rng(devices=[]):  # torch's gamma sampler reads the global generator only
            torch.set_rng_state(generator.get_state())
            sample = torch.distributions.Dirichlet(concentration.cpu()).rsample()
            generator.set_state(torch.get_rng_state())
        return sample.to(alpha.device)

    def regulariser(self, model: nn.Module, mix: dict[str, Tensor]) -> Optional[Tensor]:
        """``kl * sum_e KL(Dir(ELU(alpha_e) + 1) || Dir(1))`` over every cell type (DrNAS' ``reg_type=kl``);
        xiangning-chen/DrNAS, DARTS-space/model_search.py ``_loss``. None when ``kl`` is 0 (the default:
        DrNAS' l2, which is the alphas' Adam weight decay)."""
        if self.kl <= 0:
            return None
        total = None
        for kind in kinds_of(model):
            concentration = F.elu(model.alphas(kind)) + 1
            prior = torch.distributions.Dirichlet(torch.ones_like(concentration))
            term = torch.distributions.kl_divergence(torch.distributions.Dirichlet(concentration), prior).sum()
            total = term if total is None else total + term
        return self.kl * total


class Gumbel(SampledMap):
    """SNAS: a relaxed Gumbel-softmax sample of the raw alphas at temperature tau (annealed per epoch)."""

    def __init__(self, conf: Any) -> None:
        super().__init__(conf.init, conf.sample)
        self.tau_start, self.tau_min = conf.tau_start, conf.tau_min

    def temperature(self) -> float:
        """``(1 - e/E)(tau_start - tau_min) + tau_min`` at epoch e of E (automl/ConfigurableOptimizer,
        oneshot/archsampler/snas/sampler.py): tau_start in the first epoch, ``tau_min + (tau_start - tau_min)/E``
        in the last."""
        return (1 - self.epoch / self.epochs) * (self.tau_start - self.tau_min) + self.tau_min

    def draw(self, alpha: Tensor, generator: torch.Generator) -> Tensor:
        return F.softmax((alpha + gumbel_noise(alpha, generator)) / self.temperature(), dim=-1)


class GumbelHard(SampledMap):
    """GDAS: a one-hot row per edge, straight-through to ``p = softmax((log_softmax(alpha) + g) / tau)``."""

    single_path = True

    def __init__(self, conf: Any) -> None:
        super().__init__(conf.init, conf.sample)
        self.tau_max, self.tau_min = conf.tau_max, conf.tau_min

    def temperature(self) -> float:
        """``tau_max - (tau_max - tau_min) * e / (E - 1)`` at epoch e of E (D-X-Y/AutoDL-Projects,
        exps/NAS-Bench-201-algos/GDAS.py): tau_max in the first epoch, exactly tau_min in the last."""
        return self.tau_max - (self.tau_max - self.tau_min) * self.epoch / max(self.epochs - 1, 1)

    def initialise(self, model: nn.Module) -> None:
        """Alphas as the supernet draws them; every mixed edge runs the chosen op only."""
        super().initialise(model)
        from nasrun.supernet.mixed_op import MixedOp

        # the NB201 cell adds the unchosen entries as numbers (their gradient: the sum of the upstream
        # gradient); the DARTS-space cell multiplies the chosen op only (xautodl search_cells.py)
        mode = "scalars" if getattr(getattr(model, "space", None), "skeleton", "") == "nb201" else "product"
        for module in model.modules():
            if isinstance(module, MixedOp):
                module.single_op = mode

    def draw(self, alpha: Tensor, generator: torch.Generator) -> Tensor:
        tau = self.temperature()
        while True:  # redrawn while the noise or the probabilities hold inf or nan, as released
            g = gumbel_noise(alpha, generator)
            p = F.softmax((F.log_softmax(alpha, dim=-1) + g) / tau, dim=-1)
            if torch.isfinite(g).all() and torch.isfinite(p).all():
                break
        hard = torch.zeros_like(p).scatter_(-1, p.argmax(-1, keepdim=True), 1.0)
        return hard - p.detach() + p


class Sigmoid(AlphaMap):
    """FairDARTS: ``sigmoid(alpha)`` per op, and the zero-one loss that pushes every gate to 0 or 1."""

    def __init__(self, conf: Any) -> None:
        super().__init__(conf.init)
        self.zero_one, self.form = conf.zero_one, conf.zero_one_form

    def weights(self, model: nn.Module) -> dict[str, Tensor]:
        return {kind: torch.sigmoid(model.alphas(kind)) for kind in kinds_of(model)}

    def regulariser(self, model: nn.Module, mix: dict[str, Tensor]) -> Optional[Tensor]:
        """``-zero_one * mean((sigmoid(alpha) - 0.5)^2)`` over every gate of every cell type (``l1``:
        ``mean|sigmoid(alpha) - 0.5|``); xiaomi-automl/FairDARTS, fairdarts/separate_loss.py."""
        if self.zero_one <= 0:
            return None
        gates = torch.cat([torch.sigmoid(model.alphas(kind)).flatten() for kind in kinds_of(model)])
        centred = gates - 0.5
        term = centred.abs().mean() if self.form == "l1" else centred.pow(2).mean()
        return -self.zero_one * term


__all__ = ["Dirichlet", "Gumbel", "GumbelHard", "Sigmoid", "SampledMap", "gumbel_noise"]
