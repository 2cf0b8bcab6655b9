"""The weight-sharing search network: stacked search cells sharing two sets of alphas."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.genotype import Genotype, derive
from nasrun.supernet.cell import SearchCell, num_edges
from nasrun.supernet.mixed_op import MixedOp

#: Per cell type ("normal", "reduce"), per edge: the indices (into ``ops``) of the edge's candidate ops.
EdgeOps = Mapping[str, Sequence[Sequence[int]]]
CELL_TYPES = ("normal", "reduce")


def reduction_indices(layers: int) -> tuple[int, int]:
    """Cells that halve the maps: at one third and two thirds of the depth (DARTS convention)."""
    return layers // 3, 2 * layers // 3


class SuperNet(nn.Module):
    """DARTS search supernet (spaces.md §1.3).

    All normal cells share ``alphas_normal`` and all reduction cells ``alphas_reduce``, each of
    shape ``(num_edges, len(ops))``. They are ordinary ``nn.Parameter``s (so they live in the
    state dict and move with ``.to()``), but :meth:`weight_parameters` leaves them out, so the
    weight and architecture optimisers never share a tensor.

    Options (each off by default, so the plain DARTS supernet is unchanged):

    - ``partial_channels=K``: every mixed op runs on 1/K of its channels, then a channel shuffle
      (PC-DARTS). K must divide ``C``.
    - ``edge_norm``: edge weights ``betas_normal``/``betas_reduce`` of shape ``(num_edges,)``,
      softmaxed over each node's incoming edges and multiplied onto the edges' outputs; they are
      architecture parameters too (optimised with the alphas, checkpointed) and weigh the
      genotype derivation (PC-DARTS).
    - ``edge_ops``: each edge keeps only some ops of ``ops`` (P-DARTS stages). Every edge of a
      cell type must keep the same number of ops; the alphas then have that many columns, in the
      order of the edge's indices. :meth:`vocabulary_weights` scatters them back onto ``ops``.
    - :meth:`set_skip_dropout`: dropout on the stride-1 skip connections (P-DARTS).
    - ``alpha_map``: how the alphas become mixing weights (an object with ``initialise``,
      ``weights``, ``ranking`` and ``regulariser``; see ``nasrun.methods.alpha_maps``). None is
      softmax. NASP's argmax map runs one op per edge and ranks the raw alphas.
    """

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        ops: Sequence[str],
        nodes: int = 4,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        partial_channels: int = 1,
        edge_norm: bool = False,
        edge_ops: Optional[EdgeOps] = None,
        alpha_map: Optional[Any] = None,
    ) -> None:
        super().__init__()
        if partial_channels < 1 or C % partial_channels:
            raise ValueError(f"partial_channels={partial_channels} must be >= 1 and divide C={C}")
        self.C = C
        self.num_classes = num_classes
        self.layers = layers
        self.ops: tuple[str, ...] = tuple(ops)
        self.nodes = nodes
        self.num_edges = num_edges(nodes)
        self.partial_channels = partial_channels
        self.edge_norm = edge_norm
        self.edge_ops: dict[str, list[list[int]]] = self._check_edge_ops(edge_ops)
        names = {kind: [[self.ops[k] for k in row] for row in self.edge_ops[kind]] for kind in CELL_TYPES}

        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        reductions = reduction_indices(layers)
        C_pp, C_p, C_cur = C_stem, C_stem, C
        reduction_prev = False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_cur *= 2
            cell = SearchCell(nodes, C_pp, C_p, C_cur, reduction, reduction_prev, self.ops,
                              edge_ops=names["reduce" if reduction else "normal"], partial_channels=partial_channels)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_cur
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(self.alpha_shape("normal")))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(self.alpha_shape("reduce")))
        if edge_norm:
            self.betas_normal = nn.Parameter(1e-3 * torch.randn(self.num_edges))
            self.betas_reduce = nn.Parameter(1e-3 * torch.randn(self.num_edges))
        self.alpha_map = alpha_map
        if alpha_map is not None:
            alpha_map.initialise(self)

    def _check_edge_ops(self, edge_ops: Optional[EdgeOps]) -> dict[str, list[list[int]]]:
        everything = list(range(len(self.ops)))
        if edge_ops is None:
            return {kind: [list(everything) for _ in range(self.num_edges)] for kind in CELL_TYPES}
        out = {}
        for kind in CELL_TYPES:
            rows = [[int(k) for k in row] for row in edge_ops[kind]]
            if len(rows) != self.num_edges:
                raise ValueError(f"edge_ops[{kind!r}] has {len(rows)} rows, expected {self.num_edges}")
            for e, row in enumerate(rows):
                if not row or len(set(row)) != len(row) or not all(0 <= k < len(self.ops) for k in row):
                    raise ValueError(f"edge_ops[{kind!r}][{e}]={row}: need distinct op indices in 0..{len(self.ops) - 1}")
            if len({len(row) for row in rows}) != 1:
                raise ValueError(f"edge_ops[{kind!r}]: every edge must keep the same number of ops")
            out[kind] = rows
        return out

    def alpha_shape(self, kind: str) -> tuple[int, int]:
        """``(num_edges, ops per edge)`` of the alphas (and mixing weights) of a cell type."""
        return self.num_edges, len(self.edge_ops[kind][0])

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters: ``[alphas_normal, alphas_reduce]`` (+ ``betas_*`` with edge_norm)."""
        if self.edge_norm:
            return [self.alphas_normal, self.alphas_reduce, self.betas_normal, self.betas_reduce]
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the alphas, in ``named_parameters`` order."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def softmax_weights(self) -> dict[str, Tensor]:
        """Softmax of the alphas over the op axis, per cell type (differentiable)."""
        return {
            "normal": F.softmax(self.alphas_normal, dim=-1),
            "reduce": F.softmax(self.alphas_reduce, dim=-1),
        }

    def mixing_weights(self) -> dict[str, Tensor]:
        """The mixing weights the alpha map gives (softmax without one), per cell type (differentiable)."""
        return self.softmax_weights() if self.alpha_map is None else self.alpha_map.weights(self)

    def alpha_weights(self) -> dict[str, Tensor]:
        """What the genotype ranks: the mixing weights, or the raw alphas under NASP's argmax map."""
        return self.softmax_weights() if self.alpha_map is None else self.alpha_map.ranking(self)

    def edge_weights(self) -> dict[str, Tensor] | None:
        """Edge normalisation: softmax of the betas over each node's incoming edges (None when off)."""
        if not self.edge_norm:
            return None
        out = {}
        for kind, betas in (("normal", self.betas_normal), ("reduce", self.betas_reduce)):
            parts, start = [], 0
            for i in range(self.nodes):
                parts.append(F.softmax(betas[start : start + 2 + i], dim=-1))
                start += 2 + i
            out[kind] = torch.cat(parts)
        return out

    def vocabulary_weights(self, mix: dict[str, Tensor] | None = None, with_edges: bool = True) -> dict[str, Tensor]:
        """Mixing weights on the full op vocabulary, ``(num_edges, len(ops))``: 0 for ops an edge
        does not keep, and (``with_edges``) multiplied by the edge weights under edge
        normalisation, which is what the genotype is derived from."""
        mix = self.alpha_weights() if mix is None else mix
        edges = self.edge_weights() if with_edges else None
        out = {}
        for kind in CELL_TYPES:
            w = mix[kind]
            index = torch.tensor(self.edge_ops[kind], device=w.device)
            full = w.new_zeros((self.num_edges, len(self.ops))).scatter(1, index, w)
            out[kind] = full if edges is None else full * edges[kind][:, None]
        return out

    def set_skip_dropout(self, p: float) -> None:
        """Dropout rate on every stride-1 skip connection (active in train mode only)."""
        for m in self.modules():
            if isinstance(m, MixedOp):
                m.skip_dropout = float(p)

    def forward(self, x: Tensor, mix: dict[str, Tensor] | None = None) -> Tensor:
        """Logits. ``mix`` replaces the softmaxed alphas (methods that perturb or project them)."""
        if mix is None:
            mix = self.mixing_weights()
        for key in CELL_TYPES:
            shape = self.alpha_shape(key)
            if tuple(mix[key].shape) != shape:
                raise ValueError(f"mix[{key!r}] has shape {tuple(mix[key].shape)}, expected {shape}")
        edges = self.edge_weights()
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, mix[kind], None if edges is None else edges[kind])
        out = self.global_pooling(s1).flatten(1)
        return self.classifier(out)

    @torch.no_grad()
    def genotype(self, space_name: str = "darts") -> Genotype:
        """The discrete architecture the current alphas (and betas) encode (spaces.md §1.5)."""
        w = self.vocabulary_weights()
        return derive(w["normal"], w["reduce"], self.ops, nodes=self.nodes, space=space_name)
