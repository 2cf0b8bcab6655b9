"""Schedules: the stages of a search, what each epoch of a stage does, and what ends a stage.

The search loop asks its schedule, once per epoch, for an :class:`EpochPlan` (stage, epoch within
the stage, whether the alphas move, the skip-dropout rate) and, when a stage is over, for the op
sets the next stage keeps. :class:`Single` is one stage; :class:`Progressive` is P-DARTS'
(chenxin061/pdarts): stage i is a fresh supernet of ``supernet.layers + stage_add_layers[i]``
cells that ends by keeping the ``stage_keep[i]`` strongest ops of every edge; :class:`Widening` is
DrNAS': one supernet whose ops see more channels and fewer ops per edge from stage to stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from nasrun.genotype.genotype import Genotype
from nasrun.config.options import ProgressiveConf, SingleConf, WideningConf
from nasrun.supernet.stages import keep_strongest, refine_skips, skip_dropout_rate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    layers: int
    keep: Optional[int]  # ops per edge kept at the end of the stage (None: every op it has)
    skip_dropout: float
    partial_channels: Optional[int] = None  # the stage's K (None: supernet.partial_channels)


@dataclass(frozen=True)
class EpochPlan:
    epoch: int
    stage: int
    stage_epoch: int  # drives the learning rate, the warm-up and the ramps
    arch_active: bool
    skip_dropout: float


class Schedule:
    """One or more stages of ``epochs`` epochs each; alphas frozen for the first ``warmup`` of every stage.

    ``widens``: a stage goes on with the last stage's supernet, widened (DrNAS), instead of a fresh one
    (P-DARTS); its learning-rate cosine then spans every stage instead of restarting with each.
    """

    widens = False

    def __init__(self, conf: Any, layers: int, skip_dropout: list[float], epochs: int, warmup: int) -> None:
        self.conf = conf
        self.epochs = epochs
        self.warmup = warmup
        self.stages = self._stages(layers, skip_dropout)
        self.max_skips: Optional[int] = conf.max_skips

    def _stages(self, layers: int, skip_dropout: list[float]) -> list[Stage]:
        return [Stage(layers, None, skip_dropout[0])]

    @property
    def total_epochs(self) -> int:
        return self.epochs * len(self.stages)

    @property
    def staged(self) -> bool:
        """Whether stage records (stages.json, stage columns) are written."""
        return len(self.stages) > 1

    def plan(self, epoch: int) -> EpochPlan:
        stage = epoch // self.epochs
        e = epoch - stage * self.epochs
        p0 = self.stages[stage].skip_dropout
        drop = skip_dropout_rate(p0, e, self.epochs, self.warmup) if p0 > 0 else 0.0
        return EpochPlan(epoch, stage, e, e >= self.warmup, drop)

    def end_stage(self, model: nn.Module, stage: int) -> dict:
        """Record a finished stage: its ops, the ops each edge keeps (``next_edge_ops``), its genotype.

        Every edge keeps its ``keep`` ops of largest mixing weight; the last stage drops ``none``
        first. The next stage starts from a fresh supernet over the kept ops, as P-DARTS does.
        """
        last = stage == len(self.stages) - 1
        mix = model.summary_weights()  # what the alphas say, never a sample
        keep = self.stages[stage].keep or max(len(row) for rows in model.edge_ops.values() for row in rows)
        kept = {kind: keep_strongest(mix[kind], model.edge_ops[kind], keep, model.ops, drop_none=last)
                for kind in model.kinds}

        def names(rows: list[list[int]]) -> list[list[str]]:
            return [[model.ops[k] for k in row] for row in rows]

        return {
            "stage": stage,
            "layers": self.stages[stage].layers,
            "epochs": [stage * self.epochs, (stage + 1) * self.epochs - 1],
            "skip_dropout": self.stages[stage].skip_dropout,
            "ops": {kind: names(rows) for kind, rows in model.edge_ops.items()},
            "kept": {kind: names(rows) for kind, rows in kept.items()},
            "genotype": model.genotype().to_dict(),
            "next_edge_ops": kept,
        }

    def final_genotype(self, model: nn.Module) -> tuple[Genotype, Optional[dict]]:
        """The searched genotype, limited to ``max_skips`` skip connections in the normal cell when set."""
        if self.max_skips is None:
            return model.genotype(), None
        with torch.no_grad():
            w = model.vocabulary_weights()
        genotype, family = refine_skips(model.space, w, model.edge_ops, model.layers, self.max_skips)
        log.info("skip refinement to at most %d: %s", self.max_skips, genotype)
        return genotype, {"max_skips": self.max_skips, "family": family}


class Single(Schedule):
    """One stage of ``search.epochs`` epochs."""

    def __init__(self, conf: SingleConf, layers: int, skip_dropout: list[float], epochs: int, warmup: int) -> None:
        super().__init__(conf, layers, skip_dropout, epochs, warmup)


class Widening(Schedule):
    """DrNAS' progressive learning (xiangning-chen/DrNAS ``DARTS-space/train_search.py``): stages of one supernet
    whose ops see more channels (1/K of them, K from ``stage_partial_channels``) and fewer ops per edge
    (``stage_ops``) from stage to stage; the weights are widened between stages (``nasrun.supernet.widen``)."""

    widens = True

    def __init__(self, conf: WideningConf, layers: int, skip_dropout: list[float], epochs: int, warmup: int) -> None:
        super().__init__(conf, layers, skip_dropout, epochs, warmup)

    def _stages(self, layers: int, skip_dropout: list[float]) -> list[Stage]:
        ks, ops = self.conf.stage_partial_channels, self.conf.stage_ops
        rates = skip_dropout * len(ks) if len(skip_dropout) == 1 else skip_dropout
        return [Stage(layers, ops[i + 1] if i + 1 < len(ks) else None, rates[i], ks[i]) for i in range(len(ks))]


class Progressive(Schedule):
    """P-DARTS' stages: more cells and fewer ops per edge from stage to stage."""

    def __init__(self, conf: ProgressiveConf, layers: int, skip_dropout: list[float], epochs: int,
                 warmup: int) -> None:
        super().__init__(conf, layers, skip_dropout, epochs, warmup)

    def _stages(self, layers: int, skip_dropout: list[float]) -> list[Stage]:
        n = len(self.conf.stage_keep)
        rates = skip_dropout * n if len(skip_dropout) == 1 else skip_dropout
        return [Stage(layers + add, keep, rate)
                for add, keep, rate in zip(self.conf.stage_add_layers, self.conf.stage_keep, rates)]


def public(record: dict) -> dict:
    """A stage record without what only the loop needs."""
    return {k: v for k, v in record.items() if k != "next_edge_ops"}
