"""The evaluation network built from a genotype for retraining on CIFAR-sized images (quark0/darts NetworkCIFAR)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nasrun.errors import ConfigError
from nasrun.genotype.genotype import Cell as GenotypeCell
from nasrun.genotype.genotype import Genotype
from nasrun.spaces.ops import OPS, FactorizedReduce, Identity, ReLUConvBN, drop_path

#: The auxiliary head's 5x5/3 pool then 2x2 conv need at least 8x8 maps.
MIN_AUX_MAP = 8


class Cell(nn.Module):
    """A discrete cell: every node sums the genotype's ops applied to their chosen input states.

    Two ops may read the same input (genotypes read by the pairs rule). A node with no incoming edge
    (the threshold rule) has no state: the genotype's checks make sure no edge reads it and the output
    does not concatenate it.

    Drop path is applied to every op output except identity (dropping an identity would remove
    the only path a skip provides without regularising any weights), before the node sum.
    """

    def __init__(
        self,
        cell: GenotypeCell,
        nodes: int,
        C_pp: int,
        C_p: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_pp, C, affine=True)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=True)
        self.ops = nn.ModuleList()
        self.edges: list[tuple[int, int]] = []  # (source, target) of every op
        for name, src, dst in cell.edges:
            stride = 2 if reduction and src < 2 else 1
            self.ops.append(OPS[name](C, stride, True))
            self.edges.append((src, dst))
        self.concat = list(cell.concat)
        self.multiplier = len(self.concat)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        use_drop = self.training and drop_prob > 0
        for target in range(2, 2 + self.nodes):
            total: Tensor | None = None
            for op, (src, dst) in zip(self.ops, self.edges):
                if dst != target:
                    continue
                y = op(states[src])
                if use_drop and not isinstance(op, Identity):
                    y = drop_path(y, drop_prob)
                total = y if total is None else total + y
            states.append(total)  # None for an unfed node, which nothing reads
        return torch.cat([states[i] for i in self.concat], dim=1)


def stack_reductions(genotype: Genotype, layers: int) -> list[int]:
    """The reduction positions of a DARTS stack of ``layers`` cells (layers//3 and 2*layers//3), after
    checking that the genotype's cells can fill that many positions (ConfigError, one line, otherwise)."""
    if layers < 3:
        raise ConfigError(f"recipe.layers={layers} is not allowed: at least 3 for a DARTS-stacked network "
                          "(two reduction cells and a normal cell)")
    if not genotype.shared and len(genotype.cells) != layers:
        raise ConfigError(f"recipe.layers={layers} is not allowed: the genotype has its own cell for each of "
                          f"{len(genotype.cells)} positions; set recipe.layers={len(genotype.cells)}")
    return sorted({layers // 3, 2 * layers // 3})


def stack_cells(genotype: Genotype, layers: int, C_pp: int, C_p: int, C: int, reduction_prev: bool,
                aux_index: int) -> tuple[nn.ModuleList, int, int]:
    """The ``layers`` cells of a DARTS stack whose first cell gets inputs of C_pp and C_p channels.

    Reduction cells (layers//3 and 2*layers//3) double the channels per node, starting from ``C``;
    ``reduction_prev``: the first cell's state 0 is twice the size of its state 1 (FactorizedReduce
    on it). Returns the cells, the channels of the last cell's output and of cell ``aux_index``'s.
    """
    reductions = stack_reductions(genotype, layers)
    C_cur, C_aux = C, C_p
    cells = nn.ModuleList()
    for i in range(layers):
        reduction = i in reductions
        if reduction:
            C_cur *= 2
        cell = Cell(genotype.cell_at(i, reduction), genotype.nodes, C_pp, C_p, C_cur, reduction, reduction_prev)
        cells.append(cell)
        reduction_prev = reduction
        C_pp, C_p = C_p, cell.multiplier * C_cur
        if i == aux_index:
            C_aux = C_p
    return cells, C_p, C_aux


class AuxiliaryHeadCIFAR(nn.Module):
    """Classifier on the maps two thirds of the way up; its loss helps gradients reach early cells.

    Designed for 8x8 maps (pool -> 2x2, 2x2 conv -> 1x1). A final global average pool (a no-op
    at 8x8) lets it also accept larger maps.
    """

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class NetworkCIFAR(nn.Module):
    """Stem, ``layers`` cells from ``genotype`` (reductions at layers//3 and 2*layers//3), pool, linear.

    ``drop_path_prob`` is a public attribute the trainer sets every epoch (0 turns it off).
    The auxiliary head, if asked for, is attached after cell ``2*layers//3``; it is disabled
    (``auxiliary_enabled = False`` and ``auxiliary_note`` says why) when the maps there would be
    smaller than 8x8, e.g. 8x8 or 28x28 input. ``forward`` returns ``(logits, logits_aux)``,
    where ``logits_aux`` is None unless training with the head enabled.
    """

    def __init__(
        self,
        genotype: Genotype,
        C: int,
        num_classes: int,
        layers: int,
        auxiliary: bool,
        in_channels: int = 3,
        input_size: int = 32,
        stem_multiplier: int = 3,
    ) -> None:
        super().__init__()
        self.genotype = genotype
        self.layers = layers
        self.drop_path_prob: float = 0.0
        reductions = stack_reductions(genotype, layers)
        factor = 2 ** len(reductions)
        if input_size % factor != 0:
            raise ConfigError(
                f"input_size={input_size} is not allowed: the network halves the maps {len(reductions)} times "
                f"with FactorizedReduce, which needs even sizes; use a size divisible by {factor}"
            )
        self.aux_index = 2 * layers // 3
        aux_map = input_size // 2 ** sum(1 for r in reductions if r <= self.aux_index)

        self.auxiliary_enabled = bool(auxiliary) and aux_map >= MIN_AUX_MAP
        self.auxiliary_note: str | None = None
        if auxiliary and not self.auxiliary_enabled:
            self.auxiliary_note = (
                f"auxiliary head disabled: with {input_size}x{input_size} input the maps after cell "
                f"{self.aux_index} are {aux_map}x{aux_map}, but the head needs at least "
                f"{MIN_AUX_MAP}x{MIN_AUX_MAP} (5x5 stride-3 pool then 2x2 conv)"
            )

        C_cur = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_cur, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_cur),
        )
        self.cells, C_p, C_aux = stack_cells(genotype, layers, C_cur, C_cur, C, reduction_prev=False,
                                             aux_index=self.aux_index)
        self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes) if self.auxiliary_enabled else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        logits_aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux
