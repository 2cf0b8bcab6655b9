"""What the progressive schedule (P-DARTS; chenxin061/pdarts) does between and after stages.

- :func:`keep_strongest`: after a stage, every edge keeps its strongest ops for the next stage.
- :func:`refine_skips`: the final genotype with at most M skip connections in the normal cell.
- :func:`skip_dropout_rate`: the per-epoch rate of the dropout on skip connections.

All are plain functions of the mixing weights, so the search loop can redo them exactly on resume.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from nasrun.genotype.genotype import Genotype


def keep_strongest(
    weights: Tensor,
    edge_ops: Sequence[Sequence[int]],
    keep: int,
    ops: Sequence[str],
    drop_none: bool,
) -> list[list[int]]:
    """Per edge, the ``keep`` candidate ops of largest mixing weight (as indices into ``ops``).

    ``weights`` has one row per edge and one column per candidate of that edge (the order of
    ``edge_ops``). With ``drop_none`` (the last stage) ``none`` goes first whatever its weight.
    An edge never keeps ``none`` alone: the best other op takes the last place instead. Ties keep
    the lower op index. Each returned row is sorted, so the column order follows ``ops``.
    """
    W = weights.detach().to("cpu", torch.float64)
    out = []
    for e, row in enumerate(edge_ops):
        ranked = sorted(range(len(row)), key=lambda c: (-float(W[e, c]), row[c]))
        names = [ops[row[c]] for c in ranked]
        if drop_none:
            ranked = [c for c, n in zip(ranked, names) if n != "none"] or ranked
        kept = ranked[:keep]
        if all(ops[row[c]] == "none" for c in kept):
            others = [c for c in ranked if ops[row[c]] != "none"]
            if others:
                kept = kept[:-1] + others[:1]
        out.append(sorted(row[c] for c in kept))
    return out


def refine_skips(
    space: Any,
    weights: dict[str, Tensor],
    edge_ops: dict[str, list[list[int]]],
    layers: int,
    max_skips: int,
) -> tuple[Genotype, list[dict]]:
    """Derive the genotype, then limit the normal cell to ``max_skips`` skip connections.

    ``weights`` are per kind on the full op vocabulary (0 for ops an edge no longer has). While the
    normal cell has more than M skips, the weakest chosen skip connection is struck out, its edge
    takes its best remaining op of the vocabulary and the strongest edges per node are chosen
    again (P-DARTS). The reduction cell is left as derived. Returns the genotype for ``max_skips``
    and the family of genotypes met on the way, one per skip count (``[{"skips": n, "genotype": ...}]``).
    """
    ops = space.ops
    skip = ops.index("skip_connect") if "skip_connect" in ops else None
    W = {k: w.detach().to("cpu", torch.float64).clone() for k, w in weights.items()}
    anywhere = {k: [list(range(len(ops))) for _ in rows] for k, rows in edge_ops.items()}
    starts = {target: e for e, (source, target) in reversed(list(enumerate(space.edges)))}
    genotype = space.derive(W, anywhere, layers)
    family = [{"skips": genotype.count("skip_connect", "normal"), "genotype": genotype.to_dict()}]
    chosen = genotype
    if genotype.count("skip_connect", "normal") <= max_skips:
        return chosen, family
    assert skip is not None
    while True:
        skips = [(float(W["normal"][starts[dst] + src, skip]), starts[dst] + src)
                 for op, src, dst in genotype.cells["normal"].edges if op == "skip_connect"]
        if not skips:
            break
        # struck-out entries go below every other weight (dropped ops are 0), so they are never picked again
        W["normal"][min(skips)[1], skip] = -1.0
        genotype = space.derive(W, anywhere, layers)
        count = genotype.count("skip_connect", "normal")
        if count < family[-1]["skips"]:
            family.append({"skips": count, "genotype": genotype.to_dict()})
        if count <= max_skips and chosen.count("skip_connect", "normal") > max_skips:
            chosen = genotype
        if count == 0:
            break
    return chosen, family


def skip_dropout_rate(p0: float, epoch: int, epochs: int, warmup: int) -> float:
    """P-DARTS' rate in a stage: linear decay during the alpha warm-up, then exponential from p0.

    ``epoch < warmup``: p0 * (epochs - epoch - 1) / epochs; afterwards p0 * exp(-0.2 * (epoch - warmup))
    (so the rate jumps back to p0 when the alphas start to move, as released).
    """
    if epoch < warmup:
        return p0 * (epochs - epoch - 1) / epochs
    return p0 * math.exp(-0.2 * (epoch - warmup))


__all__ = ["keep_strongest", "refine_skips", "skip_dropout_rate"]


def aux_skip_weight(beta0: float, epoch: int, epochs: int, decay: str) -> float:
    """DARTS-' auxiliary-skip coefficient at ``epoch`` (from 0) of ``epochs``: ``linear`` beta0 * (E - e) / E
    (1 at the first epoch, 1/E at the last, never 0 during the search) or ``cosine`` beta0 * (1 + cos(pi e / E)) / 2
    (Meituan-AutoML/DARTS-, src/utils.py, with T_start = 0 and T_max = E)."""
    import math

    if decay == "cosine":
        return beta0 * (1 + math.cos(math.pi * epoch / epochs)) / 2
    return beta0 * (epochs - epoch) / epochs
