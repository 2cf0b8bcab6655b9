"""Two released ways of reading a DARTS-stacked cell off the mixing weights, besides the space's own rule.

- ``pairs`` (GDAS, D-X-Y/AutoDL-Projects ``search_model_gdas_nasnet.py``, ``genotype()``): per node, every
  (op, input) pair over the node's incoming edges and their non-``none`` ops is ranked by its weight, and the
  ``k`` strongest are kept. Two kept pairs may share an input, so a node can apply two ops to one state.
  Ties keep the earlier pair in (input, op) order, as the released stable sort does.
- ``threshold`` (FairDARTS, xiaomi-automl/FairDARTS ``utils.py``, ``parse(..., 'threshold_sparse')``): per
  node, the ``k`` inputs whose strongest op is strongest (ties: the lower input), each kept with its best op
  only when that op's weight reaches the threshold. A node may so keep no input. Such a node has no state;
  an edge from it is dropped, as the released evaluation cell skips it, and the cell outputs its fed nodes.
  ``none`` is never kept (the released space has no ``none``; a DARTS cell leaves an edge out instead).

Both read spaces whose nodes keep ``k`` inputs (top-k derivation); :func:`read_by_rule` refuses others.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from nasrun.errors import NasrunError
from nasrun.genotype.checks import RULES
from nasrun.spaces.space import Space, weights_rows

Edge = tuple[str, int, int]


class EmptyCell(NasrunError, ValueError):
    """The threshold rule kept no edge of a cell: there is no network to build from it (exit 2, one line)."""


def pairs_cell(space: Space, rows: list[list[float]], edge_ops: Sequence[Sequence[int]], k: int) -> list[Edge]:
    """The ``k`` strongest (op, input) pairs of every node (GDAS); edges in the order they were ranked."""
    ops, out, e = space.ops, [], 0
    for i in range(space.nodes):
        sources = list(range(space.inputs + i))
        ranked = [(rows[e + j][c], j, c) for j in sources for c in sorted(edge_ops[e + j]) if ops[c] != "none"]
        ranked = sorted(ranked, key=lambda t: -t[0])  # stable: ties keep (input, op) order
        out += [(ops[c], j, space.inputs + i) for _, j, c in ranked[:k]]
        e += len(sources)
    return out


def threshold_cell(space: Space, rows: list[list[float]], edge_ops: Sequence[Sequence[int]], k: int,
                   threshold: float) -> tuple[list[Edge], tuple[int, ...]]:
    """FairDARTS' sparse threshold: the edges kept and the states the cell outputs (its fed nodes)."""
    ops, out, e = space.ops, [], 0
    fed = set(range(space.inputs))
    for i in range(space.nodes):
        sources = list(range(space.inputs + i))
        target = space.inputs + i

        def best(j: int) -> int:
            cands = sorted(c for c in edge_ops[e + j] if ops[c] != "none")
            top = cands[0]
            for c in cands[1:]:
                if rows[e + j][c] > rows[e + j][top]:  # strict: ties keep the lower op index
                    top = c
            return top

        strongest = sorted(sources, key=lambda j: -rows[e + j][best(j)])[:k]
        kept = [(ops[best(j)], j, target) for j in strongest
                if rows[e + j][best(j)] >= threshold and j in fed]
        if kept:
            fed.add(target)
        out += kept
        e += len(sources)
    return out, tuple(n for n in range(space.inputs, space.inputs + space.nodes) if n in fed)


def read_by_rule(space: Space, weights: Mapping[str, Any], edge_ops: Optional[Mapping[str, Sequence[Sequence[int]]]],
                 layers: int, rule: str, threshold: float = 0.85) -> Any:
    """The genotype of the vocabulary weights (as :meth:`Space.derive` takes them) under ``rule``."""
    from nasrun.genotype.genotype import Cell, Genotype

    if rule == "space":
        return space.derive(weights, edge_ops, layers)
    if rule not in RULES:
        raise ValueError(f"rule {rule!r} is not one of {', '.join(RULES)}")
    if space.derivation != "top_k":
        raise ValueError(f"rule {rule} reads cells whose nodes keep k inputs; space {space.name} derives by "
                         f"{space.derivation}")
    positions, k = dict(space.positions(layers)), space.edges_per_node
    cells = {}
    for kind in space.kinds(layers):
        rows = weights_rows(weights[kind])
        ops = edge_ops[kind] if edge_ops is not None else space.edge_ops(space.cell_type(kind, layers))
        reduction = bool(kind == "reduce" or positions.get(kind, False))
        if rule == "pairs":
            edges, concat = pairs_cell(space, rows, ops, k), space.concat()
        else:
            edges, concat = threshold_cell(space, rows, ops, k, threshold)
            if not edges:
                strongest = max(rows[e][c] for e, row in enumerate(ops) for c in row if space.ops[c] != "none")
                raise EmptyCell(f"the threshold rule keeps no edge of the {kind} cell: no op's weight reaches "
                                f"{threshold} (the strongest is {strongest:.4f})")
        cells[kind] = Cell(tuple(edges), concat, reduction)
    return Genotype(space=space.name, ops=space.ops, nodes=space.nodes, cells=cells, inputs=space.inputs,
                    space_hash=space.hash(), rule=rule)
