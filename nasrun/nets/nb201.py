"""The NAS-Bench-201 evaluation network: one cell repeated on a residual skeleton (D-X-Y/AutoDL-Projects TinyNetwork).

A cell is given as its 6 edges ``(op_name, source_node, target_node)``: node 0 is the cell input,
node j sums ``op(node i)`` over its edges from i < j, and node 3 is the output. Every cell of the
network uses the same edges, as in the benchmark.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from nasrun.spaces.ops import NB201_OPS, OPS, ReLUConvBN

Edge = tuple[str, int, int]

#: (source, target) of the 6 edges in the benchmark's order (the alpha row order): 1<-0, 2<-0, 2<-1, ...
NB201_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NB201_NODES = 4

#: The skeleton halves the maps twice with a stride-2 conv beside a 2x2 average pool; the two agree
#: on the output size only for even sizes, so both sides must be divisible by 4.
SIZE_DIVISOR = 4


def _edge_name(src: int, tgt: int) -> str:
    return f"{tgt}<-{src}"


def check_edges(edges: Sequence[Edge]) -> tuple[Edge, ...]:
    """The edges in the benchmark's order; a ValueError names the first problem.

    Exactly the 6 NAS-Bench-201 edges, each once, each with an op nasrun knows (``OPS``).
    """
    all_edges = ", ".join(_edge_name(s, t) for s, t in NB201_EDGES)
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence):
        raise ValueError(f"edges must be a sequence of (op_name, source, target), got {type(edges).__name__}")
    by_link: dict[tuple[int, int], str] = {}
    for entry in edges:
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise ValueError(f"edge {entry!r} is not an (op_name, source, target) triple")
        name, src, tgt = entry
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (src, tgt)):
            raise ValueError(f"edge {entry!r}: source and target must be node numbers (ints)")
        if (src, tgt) not in NB201_EDGES:
            raise ValueError(f"edge {_edge_name(src, tgt)} is not a NAS-Bench-201 edge ({all_edges})")
        if not isinstance(name, str) or name not in OPS:
            raise ValueError(
                f"unknown op {name!r} on edge {_edge_name(src, tgt)} (NAS-Bench-201 ops: "
                f"{', '.join(NB201_OPS)}; all known ops: {', '.join(OPS)})"
            )
        if (src, tgt) in by_link:
            raise ValueError(f"edge {_edge_name(src, tgt)} is given twice")
        by_link[(src, tgt)] = name
    missing = [_edge_name(s, t) for s, t in NB201_EDGES if (s, t) not in by_link]
    if missing:
        raise ValueError(
            f"missing edge(s) {', '.join(missing)}: a NAS-Bench-201 cell has exactly the 6 edges {all_edges}"
        )
    return tuple((by_link[(s, t)], s, t) for s, t in NB201_EDGES)


def _check_sizes(C: int, N: int, num_classes: int, in_channels: int) -> None:
    limits = (("C", C, 1), ("N", N, 0), ("num_classes", num_classes, 1), ("in_channels", in_channels, 1))
    for what, value, lo in limits:
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise ValueError(f"{what}={value!r} must be an int >= {lo}")


class NB201Cell(nn.Module):
    """One cell at C channels (stride 1, affine BN); ``none`` edges are not built since they add zeros.

    A node with no incoming op (all its edges ``none``) is zeros, as in the benchmark.
    """

    def __init__(self, edges: Sequence[Edge], C: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList()
        self.links: list[tuple[int, int]] = []
        for name, src, tgt in edges:
            if name == "none":
                continue
            self.ops.append(OPS[name](C, 1, True))
            self.links.append((src, tgt))

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for j in range(1, NB201_NODES):
            terms = [op(nodes[src]) for op, (src, tgt) in zip(self.ops, self.links) if tgt == j]
            nodes.append(sum(terms[1:], terms[0]) if terms else torch.zeros_like(x))
        return nodes[-1]


class ResidualBlock(nn.Module):
    """The skeleton's stage change: two 3x3 ReLUConvBN (the first strided) plus a pooled 1x1 shortcut."""

    def __init__(self, C_in: int, C_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine=True)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=True)
        # no BN on the shortcut, as in the benchmark's skeleton
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class NB201Network(nn.Module):
    """Stem, N cells at C, residual block to 2C, N cells, residual block to 4C, N cells, BN-ReLU-pool-linear.

    Same interface as ``NetworkCIFAR`` so the retrain loop and the size counters work unchanged:
    ``forward`` returns ``(logits, None)``; ``auxiliary_enabled`` is always False (the benchmark
    has no auxiliary head, ``auxiliary_note`` says so); ``drop_path_prob`` can be set but is
    ignored, because the benchmark's recipe trains without drop path. Input height and width
    must be divisible by 4 (32x32 CIFAR, 16x16 ImageNet16).
    """

    def __init__(
        self,
        edges: Sequence[Edge],
        C: int = 16,
        N: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.edges = check_edges(edges)
        _check_sizes(C, N, num_classes, in_channels)
        self.C, self.N = C, N
        self.drop_path_prob: float = 0.0  # accepted for the retrain loop, ignored (no drop path in NB201)
        self.auxiliary_enabled = False
        self.auxiliary_note: str = "NAS-Bench-201 networks have no auxiliary head"
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        blocks: list[nn.Module] = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                blocks.append(ResidualBlock(width // 2, width))
            blocks.extend(NB201Cell(self.edges, width) for _ in range(N))
        self.cells = nn.Sequential(*blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        h, w = x.shape[-2:]
        if h % SIZE_DIVISOR or w % SIZE_DIVISOR:
            raise ValueError(
                f"NB201Network needs height and width divisible by {SIZE_DIVISOR} "
                f"(it halves the maps twice beside a 2x2 average pool), got {h}x{w}"
            )
        out = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.global_pooling(out).flatten(1)), None
