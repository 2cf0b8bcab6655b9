"""Everything a search carries from step to step, and how it is saved and restored as one object.

:class:`SearchState` holds the supernet, both optimisers, the learning-rate schedule, the data
streams, the estimator's own state, the stage, the op sets of the current stage, the finished
stage records and the alpha history. ``state_dict()`` is the checkpoint (only tensors, numbers,
strings, lists and dicts, so it loads with ``weights_only=True``); ``load_state_dict()`` resumes.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from nasrun.search.capture import Capture
from nasrun.config.schema import NasrunConf
from nasrun.methods import Estimator, Perturbation, make_alpha_map
from nasrun.methods.alpha_maps import AlphaMap
from nasrun.methods.schedules import Schedule
from nasrun.train.precision import Numerics
from nasrun.run.rng import rng_state, set_rng_state
from nasrun.spaces.ops import NOISE
from nasrun.spaces.space import Space
from nasrun.supernet import SuperNet
from nasrun.supernet.batched import plain_named
from nasrun.supernet.widen import Kept, carry_adam, plain_momentum, set_momentum, widen_state, widening_plan

#: What a search checkpoint must hold, with the type of each entry (checked before resuming).
CHECKPOINT_SCHEMA: dict[str, Any] = {
    "config": dict, "epoch": int, "elapsed": (int, float), "model": dict, "weight_optimizer": dict,
    "arch_optimizer": dict, "scheduler": dict, "train_stream": dict, "val_stream": dict, "rng": dict,
    "stage": int, "edge_ops": dict, "stages": list, "alpha_history": dict,
}


def build_supernet(cfg: NasrunConf, num_classes: int, in_channels: int, layers: int,
                   edge_ops: Optional[dict] = None, alpha_map: Optional[AlphaMap] = None,
                   partial_channels: Optional[int] = None, fused: Optional[bool] = None) -> SuperNet:
    """The supernet of one stage, with the run's alpha map (a new one unless given: a search keeps one for all
    stages), the stage's partial channels (``supernet.partial_channels`` unless given) and fused edges (
    ``supernet.fused`` unless given: the same results either way)."""
    net = cfg.supernet
    return SuperNet(net.C, num_classes, layers, in_channels=in_channels, stem_multiplier=net.stem_multiplier,
                    partial_channels=partial_channels or net.partial_channels, edge_norm=net.edge_norm,
                    edge_ops=edge_ops,
                    alpha_map=alpha_map or make_alpha_map(cfg.alpha_map), space=Space(cfg.space),
                    fused=net.fused if fused is None else fused,
                    # a weight step on one path per edge leaves the others without gradient, and the batched
                    # edges have no auxiliary skip: no stacked weights then
                    batched=not (cfg.perturbation.single_path or cfg.alpha_map.single_path or net.aux_skip > 0),
                    aux_skip=net.aux_skip > 0)


def _own(t: torch.Tensor) -> torch.Tensor:
    """A tensor that is a view into a larger one (a stacked population's member) as its own copy, so that a
    checkpoint holds this run's numbers only."""
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        return t.detach().clone()
    return t


class SearchState:
    """The model, optimisers and streams of a search, stage by stage."""

    def __init__(self, cfg: NasrunConf, num_classes: int, in_channels: int, device: torch.device,
                 schedule: Schedule, estimator: Estimator, perturbation: Perturbation, train_stream: Any,
                 val_stream: Any, fused: Optional[bool] = None) -> None:
        self.cfg, self.num_classes, self.in_channels, self.device = cfg, num_classes, in_channels, device
        self.fused = fused  # None: supernet.fused; a stacked population builds its members plain
        self.schedule, self.estimator, self.perturbation = schedule, estimator, perturbation
        self.train_stream, self.val_stream = train_stream, val_stream
        self.numerics = Numerics.of(cfg)  # precision and memory format of the supernet and its weight step
        # search.compile, decided once for every stage
        self.capture = Capture.plan(cfg.search.compile, device, cfg.estimator, cfg.supernet.skip_dropout)
        self.epoch = 0  # the next epoch to run
        self.elapsed = 0.0  # seconds spent in earlier sessions of this run
        self.stages: list[dict] = []  # records of finished stages
        self.history: dict[str, list[np.ndarray]] = {}
        # under torchrun: the supernet in DistributedDataParallel (weight steps run through it) and the job
        self.parallel: Optional[torch.nn.Module] = None
        self.job: Optional[Any] = None
        self.selection: Optional[dict] = None  # a tuning selection's progress (nasrun.search.selection)
        self.alpha_map = make_alpha_map(cfg.alpha_map)  # one for every stage: its draws go on across stages
        self.alpha_map.seed(cfg.seed)
        self.start_stage(0, None)

    def start_stage(self, stage: int, edge_ops: Optional[dict]) -> None:
        """A fresh supernet over ``edge_ops`` (all ops when None), with fresh optimisers and schedule (one cosine
        per stage, or over every stage when the schedule widens one supernet from stage to stage)."""
        s = self.cfg.search
        self.stage, self.edge_ops = stage, edge_ops
        plan = self.schedule.stages[stage]
        self.model = self.numerics.prepare(build_supernet(
            self.cfg, self.num_classes, self.in_channels, plan.layers, edge_ops, self.alpha_map,
            plan.partial_channels, self.fused).to(self.device))
        self.capture.apply(self.model)  # every stage's supernet, in place
        self.w_opt = torch.optim.SGD(self.model.weight_parameters(), lr=s.lr, momentum=s.momentum,
                                     weight_decay=s.weight_decay, nesterov=s.nesterov)
        self.a_opt = torch.optim.Adam(self.model.arch_parameters(), lr=s.arch_lr, betas=tuple(s.arch_betas),
                                      weight_decay=s.arch_weight_decay)
        period = self.schedule.total_epochs if self.schedule.widens else s.epochs
        self.lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=period, eta_min=s.lr_min)

    def widen_stage(self, stage: int, edge_ops: dict) -> None:
        """DrNAS' next stage: the supernet rebuilt for the stage's partial channels and kept ops, with the last
        stage's weights, running statistics and momentum widened (``nasrun.supernet.widen``), the kept ops'
        alphas and their Adam state, and the learning rate and its cosine where they were."""
        old, w_opt, a_opt, lr_state = self.model, self.w_opt, self.a_opt, self.lr_schedule.state_dict()
        generator = torch.Generator(device="cpu")
        generator.manual_seed(self.cfg.seed * 1000 + 5 + stage)  # the copied channels: a stream of their own
        plan = widening_plan(old, self.schedule.stages[stage].partial_channels, generator)
        weights = widen_state(old.state_dict(), plan)
        momentum = widen_state(plain_momentum(old, w_opt), plan)
        self.start_stage(stage, edge_ops)
        new = self.model
        kept = Kept(old, new)
        new.load_state_dict(kept.rename(weights))
        set_momentum(self.w_opt, new, kept.rename(momentum))
        carry_adam(a_opt, old, self.a_opt, new, kept)
        for group, before in zip(self.w_opt.param_groups, w_opt.param_groups):
            group["lr"] = before["lr"]
        self.lr_schedule.load_state_dict(lr_state)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch - 1,  # the last finished epoch
            "elapsed": self.elapsed,
            "model": {k: _own(v) for k, v in self.model.state_dict().items()},
            "weight_optimizer": self.w_opt.state_dict(),
            # the weights the optimizer holds, by name: its momentum moves between fused and plain supernets
            "weight_names": [name for name, _ in self.model.named_weight_parameters()],
            "arch_optimizer": self.a_opt.state_dict(),
            "scheduler": self.lr_schedule.state_dict(),
            "train_stream": self.train_stream.state_dict(),
            "val_stream": self.val_stream.state_dict(),
            "rng": rng_state(self.device),
            "noise": NOISE.state_dict(),
            "stage": self.stage,
            "edge_ops": self.model.edge_ops,
            "stages": self.stages,
            "estimator": self.estimator.state_dict(),
            "alpha_map": self.alpha_map.state_dict(),
            "alpha_history": {k: [a.tolist() for a in v] for k, v in self.history.items()},
            **({"selection": self.selection} if self.selection is not None else {}),
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Resume: rebuild the checkpoint's stage, then restore every part of it."""
        self.start_stage(ckpt["stage"], ckpt["edge_ops"] if ckpt["stage"] > 0 else None)
        self.stages = list(ckpt["stages"])
        self.model.load_state_dict(ckpt["model"])
        self._load_weight_optimizer(ckpt["weight_optimizer"], ckpt.get("weight_names"))
        self.a_opt.load_state_dict(ckpt["arch_optimizer"])
        self.lr_schedule.load_state_dict(ckpt["scheduler"])
        self.train_stream.load_state_dict(ckpt["train_stream"])
        self.val_stream.load_state_dict(ckpt["val_stream"])
        set_rng_state(ckpt["rng"], self.device)
        NOISE.load_state_dict(ckpt.get("noise") or NOISE.state_dict())  # absent before spaces had noise
        self.estimator.load_state_dict(ckpt.get("estimator") or {})  # absent before ZARTS kept state
        self.alpha_map.load_state_dict(ckpt.get("alpha_map") or {})  # absent before maps sampled
        self.history = {k: [np.asarray(a) for a in v] for k, v in ckpt["alpha_history"].items()}
        self.selection = ckpt.get("selection")
        self.epoch, self.elapsed = ckpt["epoch"] + 1, float(ckpt["elapsed"])

    def _load_weight_optimizer(self, saved: dict, names: Optional[list]) -> None:
        """The SGD state as saved; from a supernet of the other layout (fused or plain: a stacked population's
        members are plain), its momentum by name, through the plain layout both share."""
        own = [name for name, _ in self.model.named_weight_parameters()]
        if names is None or list(names) == own:
            self.w_opt.load_state_dict(saved)
            return
        stage = self.schedule.stages[self.stage]  # the other layout's names only (the global generator is reset later)
        other = build_supernet(self.cfg, self.num_classes, self.in_channels, stage.layers, self.edge_ops, None,
                               stage.partial_channels, fused=not self.model.fused)
        named = {name: saved["state"].get(i, {}).get("momentum_buffer") for i, name in enumerate(names)}
        plain = {k: v for k, v in plain_named(other, named).items() if v is not None}
        set_momentum(self.w_opt, self.model, plain)
        for key, value in saved["param_groups"][0].items():
            if key != "params":
                self.w_opt.param_groups[0][key] = value

    def record_alphas(self) -> None:
        """Append this epoch's mixing weights (full op vocabulary, + edge weights) to the alpha history."""
        with torch.no_grad():
            weights = {k: v.cpu().numpy() for k, v in self.model.vocabulary_weights(with_edges=False).items()}
            edges = self.model.edge_weights()
            if edges is not None:
                weights.update({f"edges_{k}": v.cpu().numpy() for k, v in edges.items()})
        for kind, w in weights.items():
            self.history.setdefault(kind, []).append(w)
