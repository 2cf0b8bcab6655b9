"""Selections: how the genotype is read off a trained supernet.

- :class:`ArgmaxSelection`: the space's derivation rule on the alpha map's ranking, at the end of the search
  (DARTS and every method before DARTS-PT).
- :class:`PerturbationSelection` (DARTS-PT, ruocwang/darts-pt): decide edge by edge, by how much removing
  an op from the supernet's mixing weights lowers its search-val accuracy, then (in spaces that keep a few
  inputs per node) node by node, which incoming edges to drop. A decided edge becomes one-hot and a dropped
  edge zero in every later forward (:class:`ProjectedMap`); the supernet is tuned between decisions by the
  search loop (``nasrun.search.selection``).

This module holds the decisions; the tuning epochs, the checkpoint and the run folder are the loop's.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from nasrun.config.options import PerturbationSelectionConf
from nasrun.methods.alpha_maps import AlphaMap
from nasrun.supernet.projection import column_ops, kinds_of

#: ``score(mix) -> (accuracy, loss)`` of the supernet under the mixing weights ``mix`` on the scoring images.
Scorer = Callable[[dict[str, Tensor]], tuple[float, float]]


class Projection:
    """The decisions so far, per alpha kind: the op column each decided edge keeps, and the dropped edges."""

    def __init__(self, kinds: list[str]) -> None:
        self.ops: dict[str, dict[int, int]] = {k: {} for k in kinds}
        self.dropped: dict[str, set[int]] = {k: set() for k in kinds}
        self.nodes: dict[str, set[int]] = {k: set() for k in kinds}

    def apply(self, mix: dict[str, Tensor]) -> dict[str, Tensor]:
        """``mix`` with decided edges one-hot and dropped edges zero; undecided rows are the same tensors' values."""
        out = {}
        for kind, w in mix.items():
            ops, dropped = self.ops.get(kind, {}), self.dropped.get(kind, set())
            if not ops and not dropped:
                out[kind] = w
                continue
            keep = torch.ones(w.shape[0], 1, dtype=w.dtype, device=w.device)
            fixed = torch.zeros_like(w.detach())
            for e, col in ops.items():
                keep[e] = 0
                fixed[e, col] = 1
            for e in dropped:
                keep[e] = 0
                fixed[e] = 0
            out[kind] = w * keep + fixed
        return out

    def undecided(self, kind: str, edges: int) -> list[int]:
        return [e for e in range(edges) if e not in self.ops[kind] and e not in self.dropped[kind]]

    def state_dict(self) -> dict:
        return {"ops": {k: [[e, c] for e, c in sorted(v.items())] for k, v in self.ops.items()},
                "dropped": {k: sorted(v) for k, v in self.dropped.items()},
                "nodes": {k: sorted(v) for k, v in self.nodes.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.ops = {k: {int(e): int(c) for e, c in v} for k, v in state["ops"].items()}
        self.dropped = {k: {int(e) for e in v} for k, v in state["dropped"].items()}
        self.nodes = {k: {int(n) for n in v} for k, v in state["nodes"].items()}


class ProjectedMap(AlphaMap):
    """An alpha map seen through a :class:`Projection`: every forward, the metrics and the genotype read the
    decided edges one-hot and the dropped ones zero; the undecided edges keep the map's own weights."""

    def __init__(self, base: AlphaMap, projection: Projection) -> None:
        super().__init__(base.init)
        self.base, self.projection = base, projection
        self.single_path = base.single_path

    def seed(self, seed: int) -> None:
        self.base.seed(seed)

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        self.base.begin_epoch(epoch, epochs)

    def begin_step(self) -> None:
        self.base.begin_step()

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        with self.base.frozen():
            yield

    def weights(self, model: nn.Module) -> dict[str, Tensor]:
        return self.projection.apply(self.base.weights(model))

    def ranking(self, model: nn.Module) -> dict[str, Tensor]:
        return self.projection.apply(self.base.ranking(model))

    def summary(self, model: nn.Module) -> dict[str, Tensor]:
        return self.projection.apply(self.base.summary(model))

    def regulariser(self, model: nn.Module, mix: dict[str, Tensor]) -> Optional[Tensor]:
        return self.base.regulariser(model, mix)


@dataclass(frozen=True)
class DecisionPlan:
    """When each decision happens: ``epochs[k]`` is the tuning epoch at whose start decision k is taken
    (the first ``op_decisions`` decide ops, the rest nodes); ``tune_epochs`` tuning epochs in all."""

    op_decisions: int
    node_decisions: int
    tune_epochs: int
    epochs: tuple[int, ...]

    def at(self, epoch: int) -> list[int]:
        return [k for k, e in enumerate(self.epochs) if e == epoch]


class Selection:
    """Base: nothing happens after the search; the genotype is the space's rule on the map's ranking. Whether a
    selection tunes the supernet after the search is its option's capability (``tunes``)."""

    def __init__(self, conf: Any) -> None:
        self.conf = conf


class ArgmaxSelection(Selection):
    """DARTS' selection: the derivation rule of the space at the end of the search."""


class PerturbationSelection(Selection):
    """DARTS-PT's perturbation-based selection (ruocwang/darts-pt, sota/cnn/projection.py and
    nasbench201/projection.py)."""

    conf: PerturbationSelectionConf

    # ------------------------------------------------------------------ when
    @staticmethod
    def node_edges(model: nn.Module) -> dict[int, list[int]]:
        """The incoming edges of every node that has more than the space keeps (top-k spaces; none otherwise)."""
        space = model.space
        if space.derivation != "top_k":
            return {}
        out, start = {}, 0
        for i in range(space.nodes):
            width = space.inputs + i
            if width > space.edges_per_node:
                out[i] = list(range(start, start + width))
            start += width
        return out

    def plan(self, model: nn.Module) -> DecisionPlan:
        """One op decision per edge, then one per node with too many inputs, ``interval`` epochs apart.

        As released: ``interval * (D - 1) + 1`` tuning epochs with a topology step (the DARTS-space code,
        decisions at 0, 5, ..., 80 for D = 17), ``interval * (D - 1)`` without (the NB201 code: 0, 5, ..., 20
        and the last at 24 for D = 6); decisions at multiples of ``interval`` and the last at the last epoch.
        """
        ops, nodes = model.num_edges, len(self.node_edges(model))
        decisions, interval = ops + nodes, self.conf.interval
        tune = max(1, interval * (decisions - 1) + (1 if nodes else 0))
        epochs = tuple(min(k * interval, tune - 1) for k in range(decisions - 1)) + (tune - 1,)
        return DecisionPlan(ops, nodes, tune, epochs)

    # ------------------------------------------------------------------ what
    def better(self, acc: float, loss: float, best: Optional[tuple[float, float]]) -> bool:
        """Whether this removal hurts more than the most hurtful so far (strictly: ties keep the first)."""
        if best is None:
            return True
        return acc < best[0] if self.conf.crit == "acc" else loss > best[1]

    def decide_op(self, model: nn.Module, kind: str, projection: Projection, score: Scorer,
                  generator: torch.Generator) -> dict:
        """Draw an undecided edge of ``kind``; keep the op whose removal hurts most; the edge becomes one-hot.

        The candidates are the edge's ops (``none`` only in spaces whose derivation may keep it, NB201's);
        each is zeroed in the projected mixing weights without renormalising, as released.
        """
        undecided = projection.undecided(kind, model.num_edges)
        edge = undecided[int(torch.randint(len(undecided), (1,), generator=generator))]
        names = column_ops(model, kind)[edge]
        allow_none = model.space.derivation == "argmax"
        scores, best, chosen = {}, None, None
        for col, name in enumerate(names):
            if name == "none" and not allow_none:
                continue
            acc, loss = score(_without(model, kind, lambda w: _zero_entry(w, edge, col)))
            scores[name] = {"acc": acc, "loss": loss}
            if self.better(acc, loss, best):
                best, chosen = (acc, loss), col
        projection.ops[kind][edge] = chosen
        return {"kind": kind, "decide": "op", "edge": edge, "op": names[chosen], "scores": scores}

    def decide_node(self, model: nn.Module, kind: str, projection: Projection, score: Scorer,
                    generator: torch.Generator) -> dict:
        """Draw an undecided node of ``kind``; drop, one at a time, the incoming edge whose removal hurts least,
        until the node keeps the space's ``edges_per_node`` (ties drop the later edge, as released)."""
        node_edges = self.node_edges(model)
        open_nodes = [n for n in sorted(node_edges) if n not in projection.nodes[kind]]
        node = open_nodes[int(torch.randint(len(open_nodes), (1,), generator=generator))]
        edges = [e for e in node_edges[node] if e not in projection.dropped[kind]]
        rounds = []
        while len(edges) > model.space.edges_per_node:
            scores, best, drop = {}, None, None
            for e in edges:
                acc, loss = score(_without(model, kind, lambda w, e=e: _zero_row(w, e)))
                scores[e] = {"acc": acc, "loss": loss}
                if best is None or not self.better(acc, loss, best):  # the least hurtful removal
                    best, drop = (acc, loss), e
            edges.remove(drop)
            projection.dropped[kind].add(drop)
            rounds.append({"dropped": drop, "scores": scores})
        projection.nodes[kind].add(node)
        return {"kind": kind, "decide": "node", "node": node, "kept": edges, "rounds": rounds}

    def decide(self, k: int, plan: DecisionPlan, model: nn.Module, projection: Projection, score: Scorer,
               generator: torch.Generator) -> list[dict]:
        """Decision ``k`` of the plan, for every alpha kind in turn (each sees the previous kinds' decisions)."""
        step = self.decide_op if k < plan.op_decisions else self.decide_node
        return [step(model, kind, projection, score, generator) for kind in kinds_of(model)]


def _without(model: nn.Module, kind: str, change: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """The projected deterministic mixing weights, with ``change`` applied to ``kind``'s."""
    mix = {k: w.detach().clone() for k, w in model.summary_weights().items()}
    mix[kind] = change(mix[kind])
    return mix


def _zero_entry(w: Tensor, edge: int, col: int) -> Tensor:
    w[edge, col] = 0
    return w


def _zero_row(w: Tensor, edge: int) -> Tensor:
    w[edge] = 0
    return w

