"""The weight-sharing search network, built from the space description.

The space says which alpha sets exist (one normal and one reduction set for shared DARTS cells,
one set for NB201, one per position for independent cells), which ops every edge has and how the
cells are stacked; this module only builds what it says.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.genotype.genotype import Genotype
from nasrun.spaces.space import Space, reduction_indices
from nasrun.supernet.cell import SearchCell, SingleInputCell
from nasrun.supernet.mixed_op import MixedOp
from nasrun.nets.nb201 import ResidualBlock

#: Per alpha kind ("normal", "reduce", "cell<i>"), per edge: the indices (into ``ops``) of the edge's candidate ops.
EdgeOps = Mapping[str, Sequence[Sequence[int]]]

__all__ = ["SuperNet", "reduction_indices", "EdgeOps"]


class SuperNet(nn.Module):
    """The search supernet of a space (quark0/darts for the DARTS stack, D-X-Y/AutoDL-Projects for NB201's).

    Every alpha kind ``k`` of the space has ``alphas_<k>`` of shape ``(num_edges, ops per edge)``
    (ordinary ``nn.Parameter``s, so they live in the state dict and move with ``.to()``), shared
    by every cell of that kind; :meth:`weight_parameters` leaves them out, so the weight and
    architecture optimisers never share a tensor.

    Options (each off by default):

    - ``partial_channels=K``: every mixed op runs on 1/K of its channels, then a channel shuffle
      (PC-DARTS). K must divide ``C``.
    - ``edge_norm``: edge weights ``betas_<k>`` of shape ``(num_edges,)``, softmaxed over each
      node's incoming edges and multiplied onto the edges' outputs; architecture parameters too,
      and they weigh the genotype derivation (PC-DARTS).
    - ``edge_ops``: each edge keeps only some of its ops (P-DARTS stages). Every edge of a kind
      must keep the same number; :meth:`vocabulary_weights` scatters them back onto ``ops``.
    - :meth:`set_skip_dropout`: dropout on the stride-1 skip connections (P-DARTS).
    - ``alpha_map``: how the alphas become mixing weights (``nasrun.methods.alpha_maps``); None is
      softmax.
    - ``fused``: every mixed edge shares the work of its ops (``nasrun.supernet.fused``), and the
      edges leaving each state of a cell run as one (``nasrun.supernet.batched``: their conv weights
      stacked into fewer parameters; the state dict and the results are the plain supernet's). Under
      a single-path alpha map (NASP's: its weight step runs one op per edge, and the ops that did
      not run must get no gradient), or with ``batched=False``, the edges stay fused one by one,
      with the plain parameters.

    ``space`` describes the cells; without it, ``ops`` and ``nodes`` give a DARTS-stacked space
    with one op list on every edge.
    """

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        ops: Optional[Sequence[str]] = None,
        nodes: int = 4,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        partial_channels: int = 1,
        edge_norm: bool = False,
        edge_ops: Optional[EdgeOps] = None,
        alpha_map: Optional[Any] = None,
        space: Optional[Space] = None,
        fused: bool = False,
        batched: bool = True,
        aux_skip: bool = False,
    ) -> None:
        super().__init__()
        if partial_channels < 1 or C % partial_channels:
            raise ValueError(f"partial_channels={partial_channels} must be >= 1 and divide C={C}")
        self.space = space if space is not None else Space.simple(ops or (), nodes)
        self.C, self.num_classes, self.layers = C, num_classes, layers
        self.ops: tuple[str, ...] = self.space.ops
        self.nodes = self.space.nodes
        self.num_edges = self.space.num_edges
        self.partial_channels = partial_channels
        self.edge_norm = edge_norm
        self.fused = fused
        #: fused edges batched per source state (stacked parameters) unless the weight step runs single paths
        self._batched = fused and batched and not getattr(alpha_map, "single_path", False)
        self.positions = self.space.positions(layers)
        self.kinds: list[str] = self.space.kinds(layers)
        self.edge_ops: dict[str, list[list[int]]] = self._check_edge_ops(edge_ops)
        if self.space.skeleton == "nb201":
            self._build_nb201(in_channels)
        else:
            self._build_darts(in_channels, stem_multiplier)
        for kind in self.kinds:
            setattr(self, f"alphas_{kind}", nn.Parameter(1e-3 * torch.randn(self.alpha_shape(kind))))
        if edge_norm:
            for kind in self.kinds:
                setattr(self, f"betas_{kind}", nn.Parameter(1e-3 * torch.randn(self.num_edges)))
        if aux_skip:  # DARTS-: made last, so the other parameters are drawn as without it
            for m in self.modules():
                if isinstance(m, MixedOp):
                    m.add_aux_skip()
        self.alpha_map = alpha_map
        if alpha_map is not None:
            alpha_map.initialise(self)

    # ------------------------------------------------------------------ building
    def _names(self, kind: str) -> list[list[str]]:
        return [[self.ops[k] for k in row] for row in self.edge_ops[kind]]

    def _build_darts(self, in_channels: int, stem_multiplier: int) -> None:
        C_stem = stem_multiplier * self.C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        C_pp, C_p, C_cur = C_stem, C_stem, self.C
        reduction_prev = False
        self.cells = nn.ModuleList()
        for kind, reduction in self.positions:
            if reduction:
                C_cur *= 2
            cell = SearchCell(self.nodes, C_pp, C_p, C_cur, reduction, reduction_prev, self.ops,
                              edge_ops=self._names(kind), partial_channels=self.partial_channels, fused=self.fused,
                              batched=self._batched)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_cur
        self.head = nn.Identity()
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, self.num_classes)

    def _build_nb201(self, in_channels: int) -> None:
        """Stem, then 3 stages of ``layers`` cells at C, 2C, 4C joined by residual blocks, then BN-ReLU."""
        C = self.C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for stage in range(3):
            if stage:
                self.blocks.append(ResidualBlock(C, 2 * C))
                C *= 2
            for _ in range(self.layers):
                self.cells.append(SingleInputCell(self.nodes, C, self.ops, self._names("normal"),
                                                  self.partial_channels, self.fused, self._batched))
        self.head = nn.Sequential(nn.BatchNorm2d(C), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C, self.num_classes)

    def _check_edge_ops(self, edge_ops: Optional[EdgeOps]) -> dict[str, list[list[int]]]:
        if edge_ops is None:
            return {kind: self.space.edge_ops(self.space.cell_type(kind, self.layers)) for kind in self.kinds}
        out = {}
        for kind in self.kinds:
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

    # ------------------------------------------------------------------ parameters
    def alpha_shape(self, kind: str) -> tuple[int, int]:
        """``(num_edges, ops per edge)`` of the alphas (and mixing weights) of a kind."""
        return self.num_edges, len(self.edge_ops[kind][0])

    def alphas(self, kind: str) -> nn.Parameter:
        return getattr(self, f"alphas_{kind}")

    def arch_parameters(self) -> list[nn.Parameter]:
        """The alphas of every kind, in the space's order (then the betas, with edge_norm)."""
        params = [self.alphas(kind) for kind in self.kinds]
        if self.edge_norm:
            params += [getattr(self, f"betas_{kind}") for kind in self.kinds]
        return params

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every parameter except the alphas, with its name, in ``named_parameters`` order."""
        arch = {id(p) for p in self.arch_parameters()}
        return [(name, p) for name, p in self.named_parameters() if id(p) not in arch]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the alphas, in ``named_parameters`` order."""
        return [p for _, p in self.named_weight_parameters()]

    @property
    def normal_kinds(self) -> list[str]:
        """The alpha kinds of cells that do not reduce (NASP's size regulariser weighs those)."""
        return [k for k in self.kinds if self.space.cell_type(k, self.layers) == "normal"]

    # ------------------------------------------------------------------ mixing weights
    def softmax_weights(self) -> dict[str, Tensor]:
        """Softmax of the alphas over the op axis, per kind (differentiable)."""
        return {kind: F.softmax(self.alphas(kind), dim=-1) for kind in self.kinds}

    def mixing_weights(self) -> dict[str, Tensor]:
        """The mixing weights the alpha map gives (softmax without one), per kind (differentiable)."""
        return self.softmax_weights() if self.alpha_map is None else self.alpha_map.weights(self)

    def summary_weights(self) -> dict[str, Tensor]:
        """The deterministic mixing weights (a sampling map's mean or softmax; otherwise the mixing weights)."""
        return self.softmax_weights() if self.alpha_map is None else self.alpha_map.summary(self)

    def alpha_weights(self) -> dict[str, Tensor]:
        """What the genotype ranks: the mixing weights, or the raw alphas under NASP's argmax map."""
        return self.softmax_weights() if self.alpha_map is None else self.alpha_map.ranking(self)

    def edge_weights(self) -> dict[str, Tensor] | None:
        """Edge normalisation: softmax of the betas over each node's incoming edges (None when off)."""
        if not self.edge_norm:
            return None
        out = {}
        for kind in self.kinds:
            betas = getattr(self, f"betas_{kind}")
            parts, start = [], 0
            for i in range(self.nodes):
                width = self.space.inputs + i
                parts.append(F.softmax(betas[start : start + width], dim=-1))
                start += width
            out[kind] = torch.cat(parts)
        return out

    def vocabulary_weights(self, mix: dict[str, Tensor] | None = None, with_edges: bool = True) -> dict[str, Tensor]:
        """Mixing weights on the full op vocabulary, ``(num_edges, len(ops))``: 0 for ops an edge
        does not have, and (``with_edges``) multiplied by the edge weights under edge
        normalisation, which is what the genotype is derived from."""
        mix = self.alpha_weights() if mix is None else mix
        edges = self.edge_weights() if with_edges else None
        out = {}
        for kind in self.kinds:
            w = mix[kind]
            index = torch.tensor(self.edge_ops[kind], device=w.device)
            full = w.new_zeros((self.num_edges, len(self.ops))).scatter(1, index, w)
            out[kind] = full if edges is None else full * edges[kind][:, None]
        return out

    def set_aux_skip(self, beta: float) -> None:
        """DARTS-' coefficient of the auxiliary skip on every mixed edge (set per epoch by the loop)."""
        for m in self.modules():
            if isinstance(m, MixedOp):
                m.aux_beta = float(beta)

    def set_skip_dropout(self, p: float) -> None:
        """Dropout rate on every stride-1 skip connection (active in train mode only)."""
        for m in self.modules():
            if isinstance(m, MixedOp):
                m.skip_dropout = float(p)

    # ------------------------------------------------------------------ forward and genotype
    def forward(self, x: Tensor, mix: dict[str, Tensor] | None = None) -> Tensor:
        """Logits. ``mix`` replaces the alpha map's weights (methods that perturb or project them)."""
        if mix is None:
            mix = self.mixing_weights()
        for kind in self.kinds:
            shape = self.alpha_shape(kind)
            if tuple(mix[kind].shape) != shape:
                raise ValueError(f"mix[{kind!r}] has shape {tuple(mix[kind].shape)}, expected {shape}")
        edges = self.edge_weights() or {}
        if self.space.skeleton == "nb201":
            s = self._forward_nb201(self.stem(x), mix["normal"], edges.get("normal"))
        else:
            s0 = s1 = self.stem(x)
            for cell, (kind, _) in zip(self.cells, self.positions):
                s0, s1 = s1, cell(s0, s1, mix[kind], edges.get(kind))
            s = s1
        return self.classifier(self.global_pooling(self.head(s)).flatten(1))

    def _forward_nb201(self, s: Tensor, weights: Tensor, edge_weights: Optional[Tensor]) -> Tensor:
        for i, cell in enumerate(self.cells):
            if i and i % self.layers == 0:
                s = self.blocks[i // self.layers - 1](s)
            s = cell(s, weights, edge_weights)
        return s

    @torch.no_grad()
    def genotype(self) -> Genotype:
        """The discrete architecture the current alphas (and betas) encode, by the space's rule."""
        return self.space.derive(self.vocabulary_weights(), self.edge_ops, self.layers)
