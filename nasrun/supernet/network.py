"""The weight-sharing search network: stacked search cells sharing two sets of alphas."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.genotype import Genotype, derive
from nasrun.supernet.cell import SearchCell, num_edges
from nasrun.supernet.projection import discrete_architecture


def reduction_indices(layers: int) -> tuple[int, int]:
    """Cells that halve the maps: at one third and two thirds of the depth (DARTS convention)."""
    return layers // 3, 2 * layers // 3


class SuperNet(nn.Module):
    """DARTS search supernet (spaces.md §1.3).

    All normal cells share ``alphas_normal`` and all reduction cells ``alphas_reduce``, each of
    shape ``(num_edges, len(ops))``. They are ordinary ``nn.Parameter``s (so they live in the
    state dict and move with ``.to()``), but :meth:`weight_parameters` leaves them out, so the
    weight and architecture optimisers never share a tensor.

    ``alpha_map``: ``"softmax"`` (DARTS) or ``"argmax"`` (NASP): the forward then runs one op per
    edge, the one with the largest alpha other than ``none`` (straight-through, so the gradient
    reaches the continuous alphas), and the genotype and alpha history read the raw alphas.
    """

    alpha_map: str = "softmax"

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        ops: Sequence[str],
        nodes: int = 4,
        in_channels: int = 3,
        stem_multiplier: int = 3,
    ) -> None:
        super().__init__()
        self.C = C
        self.num_classes = num_classes
        self.layers = layers
        self.ops: tuple[str, ...] = tuple(ops)
        self.nodes = nodes
        self.num_edges = num_edges(nodes)

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
            cell = SearchCell(nodes, C_pp, C_p, C_cur, reduction, reduction_prev, self.ops)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_cur
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

        shape = (self.num_edges, len(self.ops))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(shape))

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters: ``[alphas_normal, alphas_reduce]``."""
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the alphas, in ``named_parameters`` order."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def mixing_weights(self) -> dict[str, Tensor]:
        """Softmax of the alphas over the op axis, per cell type (differentiable); see ``alpha_map``."""
        if self.alpha_map == "argmax":
            return discrete_architecture(self, differentiable=True)
        return {
            "normal": F.softmax(self.alphas_normal, dim=-1),
            "reduce": F.softmax(self.alphas_reduce, dim=-1),
        }

    def alpha_weights(self) -> dict[str, Tensor]:
        """What the genotype ranks: the mixing weights, or under ``alpha_map="argmax"`` the raw alphas."""
        if self.alpha_map == "argmax":
            return {"normal": self.alphas_normal, "reduce": self.alphas_reduce}
        return self.mixing_weights()

    def forward(self, x: Tensor, mix: dict[str, Tensor] | None = None) -> Tensor:
        """Logits. ``mix`` replaces the softmaxed alphas (methods that perturb or project them)."""
        if mix is None:
            mix = self.mixing_weights()
        shape = (self.num_edges, len(self.ops))
        for key in ("normal", "reduce"):
            if tuple(mix[key].shape) != shape:
                raise ValueError(f"mix[{key!r}] has shape {tuple(mix[key].shape)}, expected {shape}")
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            weights = mix["reduce"] if cell.reduction else mix["normal"]
            s0, s1 = s1, cell(s0, s1, weights)
        out = self.global_pooling(s1).flatten(1)
        return self.classifier(out)

    @torch.no_grad()
    def genotype(self, space_name: str = "darts") -> Genotype:
        """The discrete architecture the current alphas encode (derivation rule of spaces.md §1.5)."""
        w = self.alpha_weights()
        return derive(w["normal"], w["reduce"], self.ops, nodes=self.nodes, space=space_name)
