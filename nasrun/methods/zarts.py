"""ZARTS: zero-order architecture updates (Wang, Guo, Su, Yang, Yan, NeurIPS 2022).

Instead of differentiating through the optimal weights, ZARTS scores candidate architectures
``alpha + u`` by ``L~(alpha + u) = L_val(w_M(alpha + u), alpha + u)``, where ``w_M`` is a *copy* of
the supernet weights fine-tuned for M SGD steps under the candidate, and moves alpha with a rule
built from those scores. The supernet itself keeps training normally in the loop's weight step.

Three rules (``method.estimator``), and how firmly each is grounded (ZARTS, Wang et al., NeurIPS 2022;
vicFigure/ZARTS ``cnn/train_search.py``):

- ``mgs`` (maximum-likelihood guided search, the paper's recommended rule) follows the released
  search script: N proposals ``u_i = (1-lambda)(-g + sigma xi1) + lambda sigma xi2`` around the
  negative first-order gradient g, self-normalised importance weights
  ``c_i ~ exp(-(L_i - L0)/tau) / (q_i + eps)`` and the direct update ``alpha += sum_i c_i u_i``.
- ``rs`` (random search) is a **reconstruction**: no implementation was released. Antithetic
  finite differences along N uniform unit directions, ``g^ = mean_i (L(+delta d_i) - L(-delta d_i))
  / (2 delta) d_i`` and ``alpha -= rs_lr * g^`` (``E[g^]`` is the gradient of the delta-smoothed
  objective divided by the number of alpha entries; ``rs_lr`` absorbs that factor).
- ``gld`` (gradient-less descent) is a **reconstruction** from the authors' loss-landscape script,
  not their search script: candidates at radii ``R / 2^k``, k = 0..levels, along random unit
  directions (one per alpha tensor), and alpha moves to the best candidate if it beats the
  (equally fine-tuned) current alpha.

Decisions, recorded as config fields where there is a choice:

- Fine-tuning really trains the copy: a fresh SGD (``inner_lr``, ``inner_momentum``,
  ``inner_weight_decay``) over the copy's weights. The released search script instead steps the
  *main* optimiser, which holds the live model's parameters, so the copy never changes and the
  candidates are effectively scored with M = 0 (while the live weights get M stray optimiser
  steps). nasrun does not reproduce that; ``inner_steps=0`` scores candidates at the live weights.
- The fine-tuning batches (``inner_steps`` of them, ``inner_batch_size`` images each) are drawn
  once per update from the validation half (``inner_data=val``, as released) or the training half,
  and shared by all candidates; every candidate is scored on the step's validation batch, in
  train mode, like the released code. The live model's BatchNorm statistics are not touched.
- ``density=corrected`` uses ``q_i = (1-lambda) N(u_i; -g, sigma^2) + lambda N(u_i; 0, sigma^2)``
  (unnormalised); ``released`` reproduces the script's operator-precedence slip in the second term
  (``exp(-|u|^2/2 * sigma^2)``). The stabiliser ``density_eps`` (1e-4) is the released constant.
- sigma is constant or follows a cosine from ``sigma`` over the epochs from the first architecture
  update to the end; epoch e uses ``sigma * (1 + cos(pi (e - e0) / (E - e0))) / 2`` (no lag).
- Alpha moves by direct assignment (no optimiser, learning rate or weight decay), once every
  ``update_every`` weight steps and only after the loop's warm-up; steps in between return None.
- All sampling comes from the estimator's own CPU generator, seeded from the run's seed and
  saved in the checkpoint, so a resumed search draws the same candidates. Every candidate's loss
  is logged at debug level.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from nasrun.methods.estimators import ArchBatch, ArchGrad, Estimator, global_norm, preserved_buffers
from nasrun.methods.objective import ArchObjective
from nasrun.train.precision import full_precision
from nasrun.config.options import GLDConf, MGSConf, RSConf, ZeroOrderConf

log = logging.getLogger(__name__)

Alphas = list[Tensor]
_SEED_KEY = 7  # separates the estimator's stream from anything else seeded with the run's seed


def finetune_copy(
    model: nn.Module,
    alphas: Sequence[Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    objective: Optional[ArchObjective] = None,
    scratch: Optional[nn.Module] = None,
) -> nn.Module:
    """A copy of ``model`` (weights and BN statistics) with architecture ``alphas``, trained one SGD step per batch.

    ``scratch`` (a deep copy of the model made earlier) is reused when given, so a rule that scores
    many candidates copies the network once. The live model is only read.
    """
    if scratch is None:
        scratch = copy.deepcopy(model)
        for p in scratch.arch_parameters():
            p.requires_grad_(False)
    scratch.load_state_dict(model.state_dict())
    scratch.train(model.training)
    with torch.no_grad():
        for p, a in zip(scratch.arch_parameters(), alphas):
            p.copy_(a)
    if batches:
        objective = objective or ArchObjective()
        opt = torch.optim.SGD(scratch.weight_parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            objective(scratch, x, y).total.backward()
            opt.step()
    return scratch


class ZeroOrder(Estimator):
    """What the three rules share: when to update, sigma, sampling, fine-tuning and scoring candidates."""

    passes = 1
    rule = "zero_order"

    def __init__(self, conf: ZeroOrderConf, objective: Optional[ArchObjective] = None,
                 seed: Optional[int] = None) -> None:
        super().__init__(objective)
        self.update_every = conf.update_every
        self.inner_steps = conf.inner_steps
        self.samples = conf.samples
        self.inner_lr, self.inner_momentum = conf.inner_lr, conf.inner_momentum
        self.inner_weight_decay = conf.inner_weight_decay
        self.inner_batch_size = conf.inner_batch_size
        self.inner_data = conf.inner_data
        base = torch.initial_seed() if seed is None else seed
        derived = np.random.SeedSequence(int(base) % 2**63, spawn_key=(_SEED_KEY,)).generate_state(1, np.uint64)[0]
        self.generator = torch.Generator().manual_seed(int(derived))
        self.first_epoch: Optional[int] = None
        self.updates = 0

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "first_epoch": self.first_epoch, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.first_epoch = state["first_epoch"]
        self.updates = state["updates"]

    # ------------------------------------------------------------------ helpers
    def due(self, batch: ArchBatch) -> bool:
        """Alpha moves on steps 0, M, 2M, ... of every epoch (the loop skips warm-up epochs itself)."""
        if batch.step % self.update_every:
            return False
        if self.first_epoch is None:
            self.first_epoch = batch.epoch
        return True

    def randn(self, like: Tensor) -> Tensor:
        """Standard normal noise shaped like ``like``, drawn on the CPU from the estimator's generator.

        Drawn in fp32 and cast, so an fp64 run (``precision=fp64``) draws the fp32 run's numbers."""
        return torch.randn(like.shape, generator=self.generator, dtype=torch.float32).to(like.device, like.dtype)

    def unit(self, like: Sequence[Tensor]) -> Alphas:
        """A direction uniform on the unit sphere of all entries of ``like`` together."""
        d = [self.randn(t) for t in like]
        norm = global_norm(d)
        return [t / norm for t in d]

    def finetune_batches(self, batch: ArchBatch) -> list[tuple[Tensor, Tensor]]:
        stream: Optional[Iterator] = batch.val_stream if self.inner_data == "val" else batch.train_stream
        out = []
        for _ in range(self.inner_steps):
            if stream is not None:
                x, y = next(stream)
            elif self.inner_data == "val":
                x, y = batch.x_val, batch.y_val
            else:
                x, y = batch.x_train, batch.y_train
            out.append((x[: self.inner_batch_size], y[: self.inner_batch_size]))
        return out

    @full_precision()  # loss differences of nearby alphas: below bf16's resolution
    def scores(self, model: nn.Module, candidates: Sequence[Alphas], batches, x: Tensor, y: Tensor) -> list[float]:
        """``L~`` of every candidate: fine-tune a copy under it, then its validation loss (no gradient)."""
        scratch = None
        out = []
        for cand in candidates:
            scratch = finetune_copy(model, cand, batches, self.inner_lr, self.inner_momentum,
                                    self.inner_weight_decay, self.objective, scratch)
            with torch.no_grad():
                out.append(float(self.objective(scratch, x, y).total))
        return out

    @full_precision()
    def current(self, model: nn.Module, batch: ArchBatch, with_grad: bool) -> tuple[float, int, Optional[Alphas]]:
        """Validation loss, correct count and (optionally) the first-order gradient at the current alpha."""
        alphas = model.arch_parameters()
        with preserved_buffers(model), torch.set_grad_enabled(with_grad):
            value = self.objective(model, batch.x_val, batch.y_val)
            grads = None
            if with_grad:
                raw = torch.autograd.grad(value.total, alphas, allow_unused=True)
                grads = [g.detach() if g is not None else torch.zeros_like(a) for g, a in zip(raw, alphas)]
        correct = value.correct(batch.y_val) if value.logits.dim() == 2 else 0
        return float(value.total.detach()), correct, grads

    def log_candidates(self, losses: Sequence[float], reference: float, extra: Sequence[float] | None = None) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        for i, value in enumerate(losses):
            more = f"  weight {extra[i]:.4f}" if extra is not None else ""
            log.debug("%s update %d candidate %d: loss %.6f (current %.6f)%s", self.rule, self.updates, i, value,
                      reference, more)


def _add(a: Alphas, b: Alphas, scale: float = 1.0) -> Alphas:
    return [x + scale * y for x, y in zip(a, b)]


def _sqnorm(ts: Alphas) -> float:
    return float(sum(float((t.double() ** 2).sum()) for t in ts))


class MGS(ZeroOrder):
    """ZARTS-MGS: importance-weighted proposals around the negative first-order gradient (as released)."""

    rule = "mgs"

    def __init__(self, conf: MGSConf | None = None, objective: Optional[ArchObjective] = None,
                 seed: Optional[int] = None) -> None:
        conf = conf or MGSConf()
        super().__init__(conf, objective, seed)
        self.sigma0, self.sigma_schedule, self.tau = conf.sigma, conf.sigma_schedule, conf.tau
        self.mix_lambda, self.density, self.density_eps = conf.mix_lambda, conf.density, conf.density_eps

    def sigma(self, epoch: int, epochs: int) -> float:
        if self.sigma_schedule == "constant":
            return self.sigma0
        e0 = self.first_epoch if self.first_epoch is not None else epoch
        span = max(epochs - e0, 1)
        return self.sigma0 * (1 + math.cos(math.pi * (epoch - e0) / span)) / 2

    def proposal_density(self, u: Alphas, g: Alphas, sigma: float) -> float:
        """The (unnormalised) mixture density q(u) of the proposals."""
        lam = self.mix_lambda
        near = math.exp(-_sqnorm(_add(u, g)) / (2 * sigma**2))
        if self.density == "released":
            zero = math.exp(-_sqnorm(u) / 2 * sigma**2)
        else:
            zero = math.exp(-_sqnorm(u) / (2 * sigma**2))
        return (1 - lam) * near + lam * zero

    def __call__(self, model: nn.Module, batch: ArchBatch) -> Optional[ArchGrad]:
        if not self.due(batch):
            return None
        alphas = [a.detach() for a in model.arch_parameters()]
        loss0, correct, g = self.current(model, batch, with_grad=True)
        assert g is not None
        sigma = self.sigma(batch.epoch, batch.epochs)
        lam = self.mix_lambda
        proposals = []
        for _ in range(self.samples):
            xi1 = [self.randn(a) for a in alphas]
            xi2 = [self.randn(a) for a in alphas]
            proposals.append([(1 - lam) * (-gj + sigma * a) + lam * sigma * b for gj, a, b in zip(g, xi1, xi2)])
        batches = self.finetune_batches(batch)
        losses = self.scores(model, [_add(alphas, u) for u in proposals], batches, batch.x_val, batch.y_val)
        log_c = torch.tensor(
            [-(li - loss0) / self.tau - math.log(self.proposal_density(u, g, sigma) + self.density_eps)
             for li, u in zip(losses, proposals)],
            dtype=torch.float64,
        )
        c = torch.softmax(log_c, 0)  # = p_i / (q_i + eps), normalised to sum 1, without overflow
        self.log_candidates(losses, loss0, c.tolist())
        update = [sum(float(ci) * u[j] for ci, u in zip(c, proposals)) for j in range(len(alphas))]
        self.updates += 1
        stats = {
            "zo_sigma": sigma,
            "zo_ess": float(1.0 / (c**2).sum()),
            "zo_best_gain": loss0 - min(losses),
            "zo_step_norm": float(global_norm(update)),
            "g1_norm": float(global_norm(g)),
        }
        return ArchGrad(None, loss0, correct, stats, update=update)


class RS(ZeroOrder):
    """ZARTS-RS, a reconstruction (no released code): antithetic random-direction finite differences."""

    rule = "rs"

    def __init__(self, conf: RSConf | None = None, objective: Optional[ArchObjective] = None,
                 seed: Optional[int] = None) -> None:
        conf = conf or RSConf()
        super().__init__(conf, objective, seed)
        self.rs_lr, self.rs_radius = conf.rs_lr, conf.rs_radius

    def __call__(self, model: nn.Module, batch: ArchBatch) -> Optional[ArchGrad]:
        if not self.due(batch):
            return None
        alphas = [a.detach() for a in model.arch_parameters()]
        loss0, correct, _ = self.current(model, batch, with_grad=False)
        delta = self.rs_radius
        directions = [self.unit(alphas) for _ in range(self.samples)]
        candidates = []
        for d in directions:
            candidates += [_add(alphas, d, delta), _add(alphas, d, -delta)]
        losses = self.scores(model, candidates, self.finetune_batches(batch), batch.x_val, batch.y_val)
        self.log_candidates(losses, loss0)
        estimate = [torch.zeros_like(a) for a in alphas]
        for i, d in enumerate(directions):
            slope = (losses[2 * i] - losses[2 * i + 1]) / (2 * delta)
            estimate = _add(estimate, d, slope / self.samples)
        update = [-self.rs_lr * e for e in estimate]
        self.updates += 1
        stats = {"zo_grad_norm": float(global_norm(estimate)), "zo_step_norm": float(global_norm(update)),
                 "zo_best_gain": loss0 - min(losses)}
        return ArchGrad(None, loss0, correct, stats, update=update)


class GLD(ZeroOrder):
    """ZARTS-GLD, a reconstruction from the authors' visualisation script: best of geometrically shrinking radii."""

    rule = "gld"

    def __init__(self, conf: GLDConf | None = None, objective: Optional[ArchObjective] = None,
                 seed: Optional[int] = None) -> None:
        conf = conf or GLDConf()
        super().__init__(conf, objective, seed)
        self.gld_radius, self.gld_levels = conf.gld_radius, conf.gld_levels

    def levels(self, alpha: Tensor) -> int:
        """``floor(log2(R / r))`` with the script's ``R = 2E`` and ``r = 0.01 / sqrt(E K)`` (both rescaled alike)."""
        if self.gld_levels is not None:
            return self.gld_levels
        E, K = alpha.shape[0], alpha.shape[-1]
        return max(0, int(math.floor(math.log2(2 * E * math.sqrt(E * K) / 0.01))))

    def __call__(self, model: nn.Module, batch: ArchBatch) -> Optional[ArchGrad]:
        if not self.due(batch):
            return None
        alphas = [a.detach() for a in model.arch_parameters()]
        loss0, correct, _ = self.current(model, batch, with_grad=False)
        steps = []
        for k in range(self.levels(alphas[0]) + 1):
            radius = self.gld_radius / 2**k
            # one random unit direction per alpha tensor (per cell type), scaled to the radius
            steps.append([radius * self.unit([a])[0] for a in alphas])
        candidates = [alphas] + [_add(alphas, s) for s in steps]
        losses = self.scores(model, candidates, self.finetune_batches(batch), batch.x_val, batch.y_val)
        self.log_candidates(losses, loss0)
        best = 0
        for i in range(1, len(losses)):
            if losses[i] < losses[best]:
                best = i
        update = [torch.zeros_like(a) for a in alphas] if best == 0 else steps[best - 1]
        self.updates += 1
        stats = {"zo_accept": float(best > 0), "zo_radius": self.gld_radius / 2 ** (best - 1) if best else 0.0,
                 "zo_best_gain": losses[0] - losses[best], "zo_step_norm": float(global_norm(update))}
        return ArchGrad(None, loss0, correct, stats, update=update)


__all__ = ["GLD", "MGS", "RS", "ZeroOrder", "finetune_copy"]
