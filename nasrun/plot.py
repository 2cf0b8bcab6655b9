"""Figures from run folders: cell diagrams, alpha heatmaps, and per-epoch curves of a sweep.

Everything is drawn with matplotlib (Agg backend, no display and no system binaries). Each function
writes one PNG and returns its path. matplotlib is an optional dependency (``pip install 'nasrun[plot]'``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nasrun.errors import NasrunError
from nasrun.genotype import Genotype

OP_COLORS = {
    "none": "#9e9e9e",
    "max_pool_3x3": "#1f77b4",
    "avg_pool_3x3": "#17becf",
    "skip_connect": "#d62728",
    "sep_conv_3x3": "#2ca02c",
    "sep_conv_5x5": "#98df8a",
    "dil_conv_3x3": "#9467bd",
    "dil_conv_5x5": "#c5b0d5",
}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise NasrunError("plots need matplotlib: pip install 'nasrun[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(op: str) -> str:
    if op in OP_COLORS:
        return OP_COLORS[op]
    palette = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#ff7f0e"]
    return palette[sum(map(ord, op)) % len(palette)]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ------------------------------------------------------------------ cells
def _node_positions(nodes: int, inputs: int) -> dict[int, tuple[float, float]]:
    """The cell inputs on the left, the nodes on a descending diagonal, the cell output on the right."""
    top = 0.9 * nodes / 2 + 0.6
    pos = {0: (0.0, top), 1: (0.0, -top)} if inputs == 2 else {0: (0.0, 0.0)}
    for i in range(nodes):
        pos[i + inputs] = (1.9 * (i + 1), top * (0.55 - 1.1 * i / max(nodes - 1, 1)))
    pos[-1] = (1.9 * (nodes + 1), 0.0)  # the cell output
    return pos


def _bezier(p0, p2, rad: float, t: float) -> tuple[float, float]:
    """A point of matplotlib's arc3 connection (control point at rad x the chord, to the right)."""
    (x0, y0), (x2, y2) = p0, p2
    cx, cy = (x0 + x2) / 2 + rad * (y2 - y0), (y0 + y2) / 2 - rad * (x2 - x0)
    return ((1 - t) ** 2 * x0 + 2 * t * (1 - t) * cx + t * t * x2,
            (1 - t) ** 2 * y0 + 2 * t * (1 - t) * cy + t * t * y2)


def _label(state: int, inputs: int) -> str:
    """Inputs as c_{k-2}, c_{k-1} (DARTS) or "in" (NB201); nodes by their state number, as the genotype prints them."""
    if state == -1:
        return "$c_{k}$" if inputs == 2 else "out"
    if state < inputs:
        return ("$c_{k-2}$", "$c_{k-1}$")[state] if inputs == 2 else "in"
    return str(state)


def draw_cell(ax, cell: Any, nodes: int, inputs: int, title: str) -> None:
    """One cell on a matplotlib axis: labelled states, an arrow per kept edge coloured by its op
    (``none`` edges of an NB201 cell are left out), dashed grey arrows into the cell output."""
    pos = _node_positions(nodes, inputs)
    box = {"boxstyle": "round,pad=0.35", "linewidth": 1.0, "edgecolor": "#444444"}
    for state, (x, y) in pos.items():
        face = "#fde9c9" if 0 <= state < inputs else "#d9e8f5" if state >= inputs else "#fff2a8"
        ax.text(x, y, _label(state, inputs), ha="center", va="center", fontsize=10, zorder=3,
                bbox={**box, "facecolor": face})
    seen: dict[int, int] = {}
    for op, src, dst in cell.edges:
        k = seen[dst] = seen.get(dst, -1) + 1
        if op == "none":
            continue
        p0, p2 = pos[int(src)], pos[int(dst)]
        rad = 0.2 if k % 2 == 0 else -0.2
        color = _color(str(op))
        ax.annotate("", xy=p2, xytext=p0, zorder=2,
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.6, "shrinkA": 14, "shrinkB": 14,
                                "connectionstyle": f"arc3,rad={rad}"})
        short = math.dist(p0, p2) < 2.5  # a label near the end of a short edge would cover the node
        lx, ly = _bezier(p0, p2, rad, 0.5 if short else 0.62)
        ax.text(lx, ly, str(op), ha="center", va="center", fontsize=7, color=color, zorder=4,
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    for state in cell.concat:
        ax.annotate("", xy=pos[-1], xytext=pos[int(state)], zorder=1,
                    arrowprops={"arrowstyle": "-|>", "color": "#999999", "lw": 0.8, "linestyle": "--",
                                "shrinkA": 14, "shrinkB": 14})
    ax.set_title(title, fontsize=11)
    ax.set_xlim(-0.8, pos[-1][0] + 0.8)
    top = max(y for _, y in pos.values())
    ax.set_ylim(-top - 0.6, top + 0.6)
    ax.axis("off")


def _edge_state(state: int) -> str:
    """A state as the alpha heatmaps name it: k-2, k-1 for the inputs, then the node's index."""
    return {0: "k-2", 1: "k-1"}.get(state, str(state - 2))


def _cell_title(name: str, cell: Any, shared_types: int) -> str:
    skips = sum(1 for op, _, _ in cell.edges if op == "skip_connect")
    if shared_types == 1:
        kind = "cell"
    else:
        kind = {"normal": "normal cell", "reduce": "reduction cell"}.get(
            name, f"{name} ({'reduction' if cell.reduction else 'normal'})")
    return f"{kind} ({skips} skip)"


def plot_genotype(genotype: Genotype, path: str | Path, title: str = "") -> Path:
    """Every cell of a genotype (normal and reduction, the NB201 cell, or one per position) in one PNG."""
    plt = _pyplot()
    names = list(genotype.cells)
    columns = min(len(names), 4)
    rows = -(-len(names) // columns)
    width = 2.0 + 1.9 * genotype.nodes
    fig, axes = plt.subplots(rows, columns, figsize=(columns * width, rows * (1.6 + 0.9 * genotype.nodes)),
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        cell = genotype.cells[name]
        draw_cell(ax, cell, genotype.nodes, genotype.inputs, _cell_title(name, cell, len(names)))
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=12)
    return _save(fig, path)


# ----------------------------------------------------------------- alphas
def edge_labels(edges: int) -> list[str]:
    """Edge names in the supernet's order: node i takes c_{k-2}, c_{k-1} and nodes 0..i-1."""
    nodes = int(round((-3 + math.sqrt(9 + 8 * edges)) / 2))
    if nodes * (nodes + 3) // 2 != edges:
        return [str(e) for e in range(edges)]
    return [f"{_edge_state(src)} -> {i}" for i in range(nodes) for src in range(i + 2)]


def plot_alphas(alphas: Mapping[str, Any], path: str | Path, title: str = "", epoch: int = -1) -> Path:
    """Heatmaps of the mixing weights (edges x ops) of one epoch, one per alpha kind.

    ``alphas`` is an ``alphas.npz`` (or a dict alike): per kind (``normal`` and ``reduce``, or
    ``cell0``, ...) an array of shape (epochs, edges, ops), and ``ops``, the op names.
    """
    plt = _pyplot()
    ops = [str(o) for o in np.asarray(alphas["ops"]).tolist()]
    names = [k for k in getattr(alphas, "files", list(alphas)) if k != "ops" and not k.startswith("edges_")]
    cells = [(cell, np.asarray(alphas[cell])) for cell in names[:8]]  # the first 8 of per-position cells
    edges = cells[0][1].shape[-2]
    fig, axes = plt.subplots(1, len(cells), figsize=(1.1 * len(ops) * len(cells) + 1.5, 0.42 * edges + 2.2),
                             squeeze=False)
    for ax, (cell, history) in zip(axes[0], cells):
        weights = history[epoch] if history.ndim == 3 else history
        im = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(float(weights.max()), 1e-6), aspect="auto")
        ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(weights.shape[0]), edge_labels(weights.shape[0]), fontsize=8)
        for (r, c), value in np.ndenumerate(weights):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if value < 0.6 * weights.max() else "black")
        shown = history.shape[0] + epoch if history.ndim == 3 and epoch < 0 else epoch
        ax.set_title(f"{cell} cell, epoch {shown + 1}" if history.ndim == 3 else f"{cell} cell", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------- curves
def plot_curves(groups: Sequence[tuple[str, Sequence[tuple[str, Sequence[Mapping[str, Any]]]]]], path: str | Path,
                keys: Sequence[tuple[str, str]] = (("skip_normal", "skip connections (normal cell)"),
                                                    ("val_acc", "search-val accuracy"))) -> Path:
    """One panel per group and per key; in each, one line per run (labelled, e.g. by seed) over epochs.

    ``groups`` is ``[(group label, [(run label, metrics rows), ...]), ...]``; rows are metrics.jsonl objects.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    ncols = max(len(groups), 1)
    fig, axes = plt.subplots(len(keys), ncols, figsize=(4.2 * ncols, 3.0 * len(keys)), squeeze=False,
                             sharey="row")
    for col, (label, runs) in enumerate(groups):
        for row, (key, ylabel) in enumerate(keys):
            ax = axes[row][col]
            for run_label, rows in runs:
                points = [(r["epoch"] + 1, r[key]) for r in rows if r.get(key) is not None and "epoch" in r]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, marker="o", markersize=3, label=run_label)
            if row == 0:
                ax.set_title(label, fontsize=9)
            if col == 0:
                ax.set_ylabel(ylabel, fontsize=9)
            if row == len(keys) - 1:
                ax.set_xlabel("epoch", fontsize=9)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if key.startswith(("skip", "param_free")):
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    return _save(fig, path)
