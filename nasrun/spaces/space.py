"""A search space as data: the one description the supernet, the genotype, the networks and the plots read.

:class:`Space` is built from the ``space`` config (``nasrun.config.schema.SpaceConf``) and answers every
question about the space's shape: the op vocabulary (alpha column order), the ops of every edge,
the edges of a cell and their order (alpha row order), which alphas exist for a number of cells
(one normal and one reduction set when cells are shared, one set per position otherwise), which
positions reduce, how a genotype is derived from the mixing weights, and how many architectures
the space holds. Nothing outside ``nasrun/spaces/`` asks which space it is in.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, is_dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from nasrun.config.checks import check, int_range, one_of
from nasrun.spaces.names import OP_NAMES as OPS

if TYPE_CHECKING:
    from nasrun.genotype.genotype import Genotype

DERIVATIONS = ("top_k", "argmax", "searched")
SHARING = ("shared", "independent")
SKELETONS = ("darts", "nb201")
#: Cell types per skeleton: the DARTS stack has normal and reduction cells; NB201 reduces in residual blocks.
CELL_TYPES = {"darts": ("normal", "reduce"), "nb201": ("normal",)}
INPUTS = {"darts": 2, "nb201": 1}
MAX_NODES = 32


def cell_edges(inputs: int, nodes: int) -> list[tuple[int, int]]:
    """``(source, target)`` state pairs in alpha row order: for node i, from every earlier state.

    States ``0..inputs-1`` are the cell inputs and ``inputs + i`` is node i. For DARTS (2 inputs,
    4 nodes) this is the 14-edge order of quark0/darts' ``cnn/model_search.py``; for NB201 (1 input, 3 nodes) the order
    1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2 of §3.2.
    """
    return [(j, inputs + i) for i in range(nodes) for j in range(inputs + i)]


def reduction_indices(layers: int) -> tuple[int, int]:
    """Cells that halve the maps in the DARTS stack: at one third and two thirds of the depth."""
    return layers // 3, 2 * layers // 3


def check_space(c: Any) -> None:
    """Validate a space config: every field, and that the lists fit the cell's edges."""
    one_of("space.skeleton", c.skeleton, SKELETONS)
    one_of("space.derivation", c.derivation, DERIVATIONS)
    one_of("space.cells", c.cells, SHARING)
    check(c.inputs == INPUTS[c.skeleton], "space.inputs", c.inputs,
          f"{INPUTS[c.skeleton]} for the {c.skeleton} skeleton")
    int_range("space.nodes", c.nodes, 1, MAX_NODES)
    check(1 <= len(c.ops) <= len(OPS) and len(set(c.ops)) == len(c.ops), "space.ops", c.ops,
          f"1 to {len(OPS)} distinct op names")
    for op in c.ops:
        check(op in OPS, "space.ops", op, "known ops are " + ", ".join(sorted(OPS)))
    check(c.skeleton == "darts" or c.cells == "shared", "space.cells", c.cells,
          "shared for the nb201 skeleton (one cell repeated)")
    if c.derivation == "top_k":
        int_range("space.edges_per_node", c.edges_per_node, 1, c.inputs)
    types = CELL_TYPES[c.skeleton]
    n_edges = len(cell_edges(c.inputs, c.nodes))
    for field_name, lists in (("cell_ops", c.cell_ops), ("edge_ops", c.edge_ops)):
        for kind in lists or {}:
            check(kind in types, f"space.{field_name}", kind, f"a cell type of the {c.skeleton} skeleton: "
                  + ", ".join(types))
    for kind in types:
        for e, ops in enumerate(_edge_names(c, kind, n_edges)):
            where = (f"space.edge_ops.{kind}[{e}]" if c.edge_ops and kind in c.edge_ops
                     else f"space.cell_ops.{kind}" if c.cell_ops and kind in c.cell_ops else "space.ops")
            check(bool(ops) and len(set(ops)) == len(ops) and all(op in c.ops for op in ops), where, ops,
                  "a non-empty list of distinct ops from space.ops")
            check(c.derivation == "argmax" or any(op != "none" for op in ops), where, ops,
                  "needs an op other than none")
        lengths = {len(ops) for ops in _edge_names(c, kind, n_edges)}
        check(len(lengths) == 1, f"space.edge_ops.{kind}", sorted(lengths),
              "every edge of a cell type needs the same number of ops (one alpha row each)")


def _edge_names(c: Any, kind: str, n_edges: int) -> list[list[str]]:
    """The op names of every edge of a cell type: per-edge lists, else the cell type's list, else ``ops``."""
    if c.edge_ops and kind in c.edge_ops:
        rows = [list(r) for r in c.edge_ops[kind]]
        check(len(rows) == n_edges, f"space.edge_ops.{kind}", len(rows),
              f"one list per edge: {n_edges} for {c.nodes} nodes and {c.inputs} inputs")
        return rows
    if c.cell_ops and kind in c.cell_ops:
        return [list(c.cell_ops[kind]) for _ in range(n_edges)]
    return [list(c.ops) for _ in range(n_edges)]


class Space:
    """The shape of a search space, read from its config (see :func:`check_space` for the rules)."""

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        self.name: str = conf.name
        self.ops: tuple[str, ...] = tuple(conf.ops)
        self.nodes: int = conf.nodes
        self.inputs: int = conf.inputs
        self.derivation: str = conf.derivation
        self.edges_per_node: int = conf.edges_per_node
        self.sharing: str = conf.cells
        self.skeleton: str = conf.skeleton
        self.edges = cell_edges(self.inputs, self.nodes)
        self.cell_types = CELL_TYPES[self.skeleton]
        self._edge_ops = {kind: [[self.ops.index(op) for op in row]
                                 for row in _edge_names(conf, kind, len(self.edges))] for kind in self.cell_types}

    @classmethod
    def simple(cls, ops: Sequence[str], nodes: int = 4, name: str = "darts") -> "Space":
        """A DARTS-stacked space with one op list on every edge (the fields of ``SpaceConf``'s defaults)."""
        conf = SimpleNamespace(name=name, ops=list(ops), cell_ops=None, edge_ops=None, nodes=nodes, inputs=2,
                               derivation="top_k", edges_per_node=2, cells="shared", skeleton="darts", description="")
        check_space(conf)
        return cls(conf)

    # ------------------------------------------------------------------ cells and alphas
    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def min_layers(self) -> int:
        """The fewest cells the skeleton takes: two reduction cells and a normal one in the DARTS stack."""
        return 1 if self.skeleton == "nb201" else 3

    @property
    def layers_meaning(self) -> str:
        if self.skeleton == "nb201":
            return "cells per stage of the residual skeleton"
        return "cells in the DARTS stack, reductions at 1/3 and 2/3"

    def positions(self, layers: int) -> list[tuple[str, bool]]:
        """Per cell position of a network of ``layers`` cells (per stage for NB201): its alpha kind and
        whether it reduces. Shared cells use kinds "normal"/"reduce"; independent ones "cell<i>"."""
        if self.skeleton == "nb201":
            return [("normal", False)] * (3 * layers)
        reductions = reduction_indices(layers)
        out = []
        for i in range(layers):
            reduction = i in reductions
            kind = f"cell{i}" if self.sharing == "independent" else ("reduce" if reduction else "normal")
            out.append((kind, reduction))
        return out

    def kinds(self, layers: int) -> list[str]:
        """The alpha sets a supernet of ``layers`` cells has, in order."""
        seen: dict[str, None] = {}
        for kind, _ in self.positions(layers):
            seen.setdefault(kind, None)
        if self.sharing == "shared":
            return [k for k in self.cell_types if k in seen] or list(self.cell_types[:1])
        return list(seen)

    def cell_type(self, kind: str, layers: int) -> str:
        """"normal" or "reduce": which op lists an alpha kind uses."""
        if kind in self.cell_types:
            return kind
        reduction = dict(self.positions(layers))[kind]
        return "reduce" if reduction and "reduce" in self.cell_types else "normal"

    def edge_ops(self, cell_type: str) -> list[list[int]]:
        """Per edge, the indices (into ``ops``) of its candidate ops, in alpha column order."""
        return [list(row) for row in self._edge_ops[cell_type]]

    def concat(self) -> tuple[int, ...]:
        """The states a cell outputs: every intermediate node (DARTS), or the last node (NB201)."""
        if self.skeleton == "nb201":
            return (self.inputs + self.nodes - 1,)
        return tuple(range(self.inputs, self.inputs + self.nodes))

    # ------------------------------------------------------------------ derivation
    def derive(self, weights: Mapping[str, Any], edge_ops: Optional[Mapping[str, Sequence[Sequence[int]]]],
               layers: int) -> "Genotype":
        """The genotype the mixing weights encode: per alpha kind, ``weights[kind]`` is ``(num_edges,
        len(ops))`` on the vocabulary (0 for ops an edge does not have); ``edge_ops[kind]`` (default:
        the space's) are the ops each edge may pick."""
        from nasrun.genotype.genotype import Cell, Genotype

        positions = dict(self.positions(layers))
        cells = {}
        for kind in self.kinds(layers):
            w = weights[kind]
            if tuple(w.shape) != (self.num_edges, len(self.ops)):
                raise ValueError(f"{kind} weights have shape {tuple(w.shape)}, expected {(self.num_edges, len(self.ops))}")
            ops = edge_ops[kind] if edge_ops is not None else self.edge_ops(self.cell_type(kind, layers))
            reduction = kind == "reduce" or positions.get(kind, False)
            cells[kind] = Cell(tuple(derive_cell(self, weights_rows(w), ops)), self.concat(), bool(reduction))
        return Genotype(space=self.name, ops=self.ops, nodes=self.nodes, cells=cells, inputs=self.inputs,
                        space_hash=self.hash())

    # ------------------------------------------------------------------ identity and size
    def describe(self) -> dict:
        """The description as plain data (what the hash covers)."""
        conf = asdict(self.conf) if is_dataclass(self.conf) else dict(vars(self.conf))
        conf.pop("description", None)
        return conf

    def hash(self) -> str:
        """A short hash of the description: two genotypes with the same hash come from the same space."""
        text = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def size(self, layers: int) -> int:
        """The exact number of architectures (genotypes) the space holds for ``layers`` cells."""
        per_kind = [self._cell_size(self.cell_type(kind, layers)) for kind in self.kinds(layers)]
        return math.prod(per_kind)

    def _cell_size(self, cell_type: str) -> int:
        rows = self._edge_ops[cell_type]
        choices = [len([k for k in row if self.ops[k] != "none"]) for row in rows]
        total, e = 1, 0
        for i in range(self.nodes):
            incoming = choices[e: e + self.inputs + i]
            e += self.inputs + i
            total *= self._node_size(incoming, has_none=[any(self.ops[k] == "none" for k in row)
                                                         for row in rows[e - len(incoming): e]])
        return total

    def _node_size(self, choices: list[int], has_none: list[bool]) -> int:
        if self.derivation == "argmax":  # every edge keeps one of its ops, none included
            return math.prod(c + int(n) for c, n in zip(choices, has_none))
        if self.derivation == "searched":  # any non-empty set of edges, each with one non-none op
            return math.prod(c + 1 for c in choices) - 1
        k = self.edges_per_node  # top_k: k distinct edges (unordered), one non-none op each
        from itertools import combinations

        return sum(math.prod(choices[j] for j in subset) for subset in combinations(range(len(choices)), k))


def weights_rows(weights: Any) -> list[list[float]]:
    """A weight matrix as nested lists of floats in float64 (derivation reads plain numbers)."""
    import torch

    w = weights.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("the mixing weights contain NaN or Inf; no genotype can be derived")
    return w.tolist()


def derive_cell(space: Space, rows: list[list[float]], edge_ops: Sequence[Sequence[int]]) -> list[tuple[str, int, int]]:
    """The edges ``(op, source, target)`` a cell keeps, by the space's derivation rule.

    ``rows`` has one row per edge over the vocabulary; edge ``e`` may pick the ops ``edge_ops[e]``.
    Ties keep the lower op index and, between edges, the lower source.
    """
    ops = space.ops

    def best(e: int, allow_none: bool) -> int:
        cands = sorted(c for c in edge_ops[e] if allow_none or ops[c] != "none")
        top = cands[0]
        for c in cands[1:]:
            if rows[e][c] > rows[e][top]:  # strict: ties keep the lower op index
                top = c
        return top

    def beats_none(e: int, strength: float) -> bool:
        nones = [c for c in edge_ops[e] if ops[c] == "none"]
        return not nones or strength > rows[e][nones[0]]

    out: list[tuple[str, int, int]] = []
    e = 0
    for i in range(space.nodes):
        sources = list(range(space.inputs + i))
        target = space.inputs + i
        if space.derivation == "argmax":
            out += [(ops[best(e + j, True)], j, target) for j in sources]
        else:
            strength = [rows[e + j][best(e + j, False)] for j in sources]
            if space.derivation == "top_k":
                kept = sorted(sources, key=lambda j: -strength[j])[: space.edges_per_node]
            else:  # searched: every edge whose best op outweighs none, at least the strongest one
                kept = [j for j in sources if beats_none(e + j, strength[j])]
                kept = kept or [max(sources, key=lambda j: (strength[j], -j))]
            out += [(ops[best(e + j, False)], j, target) for j in kept]
        e += len(sources)
    return out


def derive(weights_normal: Any, weights_reduce: Any, ops: Sequence[str], nodes: int = 4,
           space: str = "darts") -> "Genotype":
    """The DARTS rule on a shared normal and reduction cell whose edges all have ``ops`` (quark0/darts ``genotype()``).

    Per node: the 2 incoming edges whose best non-``none`` weight is largest (strongest first; ties
    keep the lower source), on each the non-``none`` op of largest weight (ties: the lower index).
    """
    return Space.simple(ops, nodes, name=space).derive({"normal": weights_normal, "reduce": weights_reduce},
                                                        None, layers=3)
