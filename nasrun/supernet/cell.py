"""The search cell: every intermediate node sums a mixed edge from each earlier state."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from nasrun.spaces.ops import FactorizedReduce, ReLUConvBN
from nasrun.supernet.batched import BatchedCell, batchable
from nasrun.supernet.mixed_op import MixedOp


def mixed_op(C: int, stride: int, ops: Sequence[str], partial_channels: int, fused: bool) -> nn.Module:
    """A mixed edge: the plain one, or the fused one (same parameters and results, shared work)."""
    if fused:
        from nasrun.supernet.fused import FusedMixedOp

        return FusedMixedOp(C, stride, ops, partial_channels)
    return MixedOp(C, stride, ops, partial_channels)


def run_nodes(edges: Sequence[Callable[[Tensor, Tensor], Tensor]], states: list[Tensor], nodes: int,
              weights: Tensor | Sequence[Tensor], edge_weights: Tensor | Sequence[Tensor] | None) -> list[Tensor]:
    """Every node sums one mixed edge from each earlier state (edges in alpha row order); all states.
    ``weights`` and ``edge_weights`` are indexed by edge (a stacked population passes each edge's rows)."""
    e = 0
    for _ in range(nodes):
        total: Tensor | None = None
        for j, h in enumerate(states):
            y = edges[e + j](h, weights[e + j])
            if edge_weights is not None:
                y = edge_weights[e + j] * y
            total = y if total is None else total + y
        e += len(states)
        states.append(total)
    return states


def run_cell(cell: BatchedCell, states: list[Tensor], weights: Tensor, edge_weights: Tensor | None) -> list[Tensor]:
    """The cell's nodes: by its edge groups where it has them and they apply, else edge by edge."""
    if not cell._batched:
        return run_nodes(cell.edges, states, cell.nodes, weights, edge_weights)
    if cell.batched_applies(weights):
        return cell.run_batched(states, weights, edge_weights)
    with cell.plain_views(weights):
        return run_nodes(cell.edges, states, cell.nodes, weights, edge_weights)


def num_edges(nodes: int) -> int:
    """Mixed edges in a cell: node i has 2 + i incoming edges (2+3+4+5 = 14 for 4 nodes)."""
    return sum(2 + i for i in range(nodes))


class SearchCell(BatchedCell):
    """A DARTS search cell (quark0/darts ``cnn/model_search.py``), generalised to ``nodes`` intermediate nodes.

    Edge (= alpha row) order: for node i = 0..nodes-1, for source state j = 0..i+1, where
    states 0 and 1 are the two cell inputs and state 2 + i is node i. In a reduction cell the
    edges leaving the two inputs have stride 2. The output concatenates all intermediate
    nodes, so it has ``nodes * C`` channels. ``edge_ops`` gives each edge its own candidate ops
    (P-DARTS stages, where weak ops are dropped per edge); ``partial_channels`` is PC-DARTS' K.
    ``fused``: fused mixed edges, run per source state as edge groups (``nasrun.supernet.batched``)
    unless ``batched`` is false or an op draws noise, one by one then.
    """

    def __init__(
        self,
        nodes: int,
        C_pp: int,
        C_p: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        ops: Sequence[str],
        edge_ops: Sequence[Sequence[str]] | None = None,
        partial_channels: int = 1,
        fused: bool = False,
        batched: bool = True,
    ) -> None:
        super().__init__()
        self.nodes = nodes
        self.reduction = reduction
        self.multiplier = nodes
        # State 0 is twice the size of state 1 when the previous cell reduced.
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_pp, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        if edge_ops is not None and len(edge_ops) != num_edges(nodes):
            raise ValueError(f"edge_ops has {len(edge_ops)} entries, expected one per edge ({num_edges(nodes)})")
        self.edges = nn.ModuleList()
        lists = [ops if edge_ops is None else edge_ops[e] for e in range(num_edges(nodes))]
        batch = fused and batched and batchable(lists)  # fused edges batched per source state, or one by one
        e = 0
        for i in range(nodes):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(mixed_op(C, stride, lists[e], partial_channels, fused and not batch))
                e += 1
        if batch:
            self._batch(2, C // partial_channels)

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, edge_weights: Tensor | None = None) -> Tensor:
        """``weights``: mixing weights ``[num_edges, ops per edge]`` in edge order; ``edge_weights``:
        optional ``[num_edges]`` factors for the edges' outputs (PC-DARTS edge normalisation)."""
        states = run_cell(self, [self.preprocess0(s0), self.preprocess1(s1)], weights, edge_weights)
        return torch.cat(states[2:], dim=1)


class SingleInputCell(BatchedCell):
    """A search cell with one input (NB201; D-X-Y/AutoDL-Projects): node j sums a mixed edge from every
    earlier node (node 0 is the input); the output is the last node, at the input's size and width."""

    def __init__(self, nodes: int, C: int, ops: Sequence[str], edge_ops: Sequence[Sequence[str]] | None = None,
                 partial_channels: int = 1, fused: bool = False, batched: bool = True) -> None:
        super().__init__()
        self.nodes = nodes
        self.reduction = False
        count = sum(1 + i for i in range(nodes))
        if edge_ops is not None and len(edge_ops) != count:
            raise ValueError(f"edge_ops has {len(edge_ops)} entries, expected one per edge ({count})")
        lists = [ops if edge_ops is None else edge_ops[e] for e in range(count)]
        batch = fused and batched and batchable(lists)
        self.edges = nn.ModuleList(mixed_op(C, 1, row, partial_channels, fused and not batch) for row in lists)
        if batch:
            self._batch(1, C // partial_channels)

    def forward(self, x: Tensor, weights: Tensor, edge_weights: Tensor | None = None) -> Tensor:
        return run_cell(self, [x], weights, edge_weights)[-1]
