"""Alpha heatmaps: the mixing weights (edges x ops) of one epoch of a search, one panel per alpha kind.

Colour is each weight's deviation from its edge's uniform value on one diverging scale for every panel;
the strongest op other than ``none`` of each edge is boxed, and with the genotype the run derived its
kept edges are in bold. Edges are named by the genotype's state numbers ("source → target").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from nasrun.errors import NasrunError
from nasrun.genotype.genotype import Genotype
from nasrun.report.plot import cell_kind, pyplot, save_png, wrap_title


def _cell_shape(edges: int, inputs: Optional[int] = None) -> Optional[tuple[int, int]]:
    """(inputs, nodes) of a cell with this many edges (every node takes every earlier state), or None."""
    for k in ((inputs,) if inputs else (2, 1)):
        nodes = 0
        while k * nodes + nodes * (nodes - 1) // 2 < edges:
            nodes += 1
        if nodes and k * nodes + nodes * (nodes - 1) // 2 == edges:
            return k, nodes
    return None


def _edge_pairs(edges: int, inputs: Optional[int] = None) -> list[tuple[int, int]]:
    """(source, target) states of every edge in alpha row order (empty when ``edges`` fits no cell)."""
    shape = _cell_shape(edges, inputs)
    if shape is None:
        return []
    k, nodes = shape
    return [(src, k + i) for i in range(nodes) for src in range(k + i)]


def edge_labels(edges: int, inputs: Optional[int] = None) -> list[str]:
    """Edge names in the supernet's (alpha row) order, "source → target" by the genotype's state numbers:
    node ``s`` takes every earlier state (DARTS: 0, 1 are c_{k-2}, c_{k-1} and the nodes are 2..; NB201:
    0 is the input, the nodes 1..3). ``inputs`` is found from the number of edges when not given."""
    pairs = _edge_pairs(edges, inputs)
    return [f"{src} → {dst}" for src, dst in pairs] if pairs else [str(e) for e in range(edges)]


@dataclass
class AlphaPanel:
    """What one heatmap shows: the weights, which ops each edge has, the plotted deviations, the picks."""

    kind: str
    weights: np.ndarray  # (edges, ops) at the shown epoch
    present: np.ndarray  # bool (edges, ops): the op is one of the edge's candidates
    deviation: np.ndarray  # masked (edges, ops): weight - 1/k (softmax weights) or alpha - the edge's mean
    picked: list[Optional[int]]  # per edge, the column of the strongest op other than none
    none_wins: list[bool]  # per edge: none outweighs that op
    normalised: bool  # rows are softmax weights (sum to 1 over the edge's ops)


def alpha_panel(kind: str, history: Any, ops: Sequence[str], epoch: int = -1) -> AlphaPanel:
    """The numbers one heatmap shows.

    Softmax weights (each edge's row sums to 1) are shown as ``weight - 1/k``, ``k`` the number of ops on
    the edge (0 = uniform); an op an edge does not have has weight exactly 0 and is masked. Raw alphas
    (NASP's ranking) are shown as ``alpha - mean over the edge's ops``; there an op is masked only when
    it is 0 at every epoch."""
    history = np.asarray(history, dtype=float)
    weights = history[epoch] if history.ndim == 3 else history
    sums = weights.sum(axis=1)
    normalised = bool(np.all(np.abs(sums - 1.0) < 1e-3))
    if normalised:
        present = weights != 0.0
    else:
        present = np.any(history != 0.0, axis=0) if history.ndim == 3 else np.ones_like(weights, dtype=bool)
    count = present.sum(axis=1, keepdims=True)
    if normalised:
        centre = 1.0 / np.maximum(count, 1)
    else:
        centre = np.where(present, weights, 0.0).sum(axis=1, keepdims=True) / np.maximum(count, 1)
    deviation = np.ma.masked_array(weights - centre, mask=~present)
    none = ops.index("none") if "none" in ops else None
    picked, none_wins = [], []
    for row, has in zip(weights, present):
        cols = [c for c in range(len(ops)) if has[c] and c != none]
        best = max(cols, key=lambda c: (row[c], -c)) if cols else None
        picked.append(best)
        none_wins.append(none is not None and bool(has[none]) and best is not None and row[none] > row[best])
    return AlphaPanel(kind, weights, present, deviation, picked, none_wins, normalised)



def _draw_weights(ax, panel: AlphaPanel, ops: Sequence[str], norm, cmap):
    """One panel's heatmap: hatching under the ops an edge does not have, the weights as numbers, a box
    around each edge's pick and a dashed one around ``none`` where it outweighs the pick. Returns the image."""
    from matplotlib.patches import Rectangle

    edges = panel.weights.shape[0]
    ax.add_patch(Rectangle((-0.5, -0.5), len(ops), edges, facecolor="#f2f2f2", edgecolor="#c8c8c8",
                           hatch="////", linewidth=0, zorder=0))
    image = ax.imshow(panel.deviation, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest", zorder=1)
    # enough decimals to tell the weights of an edge apart after a short search (.1262 vs .1248)
    spread = float(np.ma.max(np.ma.abs(panel.deviation))) if panel.deviation.count() else 1.0
    decimals = 4 if spread < 0.005 else 3
    for (r, c), value in np.ndenumerate(panel.weights):
        if not panel.present[r, c]:
            continue
        dev = float(panel.deviation[r, c])
        dark = dev > 0.6 * norm.vmax or dev < 0.6 * norm.vmin
        text = f"{value:.{decimals}f}"
        text = text.replace("0.", ".", 1) if text.startswith("0.") else text.replace("-0.", "-.", 1)
        ax.text(c, r, text, ha="center", va="center", fontsize=6.5, zorder=3,
                color="white" if dark else "black", fontweight="bold" if c == panel.picked[r] else "normal")
    for r, (best, none_wins) in enumerate(zip(panel.picked, panel.none_wins)):
        if best is not None:
            ax.add_patch(Rectangle((best - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.6,
                                   zorder=4, gid=f"pick:{r}:{best}"))
        if none_wins:
            c = ops.index("none")
            ax.add_patch(Rectangle((c - 0.45, r - 0.45), 0.9, 0.9, fill=False, edgecolor="black", linewidth=1.0,
                                   linestyle=(0, (2, 1.5)), zorder=4))
    return image


def _panel_title(panel: AlphaPanel, history: np.ndarray, panels: int, inputs: Optional[int],
                 genotype: Optional[Genotype], epoch: int) -> str:
    """The cell's name ("normal cell", "cell 3 (reduction)", ...) and, for a history, the epoch shown."""
    reduction = None
    if genotype is not None and panel.kind in genotype.cells:
        reduction = genotype.cells[panel.kind].reduction
    name = cell_kind(panel.kind, panels, inputs or 2, reduction)
    shown = (history.shape[0] + epoch if epoch < 0 else epoch) + 1 if history.ndim == 3 else None
    return name + (f", epoch {shown} of {history.shape[0]}" if shown else "")


def _label_panel(ax, panel: AlphaPanel, ops: Sequence[str], pairs: Sequence[tuple[int, int]],
                 labels: Sequence[str], kept: Mapping[str, set], title: str) -> None:
    """A line between the edges of two nodes, the op and edge ticks (the genotype's kept edges bold, dropped
    ones grey), the panel's title."""
    edges = panel.weights.shape[0]
    targets = [dst for _, dst in pairs]
    for r in range(1, len(targets)):
        if targets[r] != targets[r - 1]:
            ax.axhline(r - 0.5, color="#555555", linewidth=0.8, zorder=2)
    ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(edges), labels, fontsize=8)
    ax.set_xlim(-0.5, len(ops) - 0.5)
    ax.set_ylim(edges - 0.5, -0.5)
    if panel.kind in kept and pairs:
        for tick, pair in zip(ax.get_yticklabels(), pairs):
            if pair in kept[panel.kind]:
                tick.set_fontweight("bold")
            else:
                tick.set_color("#8a8a8a")
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_ylabel("edge (source → node)", fontsize=8)


def _notes(panels: Sequence[AlphaPanel], inputs: Optional[int], kept: Mapping[str, set]) -> str:
    """The legend under the panels: what the numbers, boxes and hatching mean, how edges are named."""
    normalised = all(p.normalised for p in panels)
    states = ("0, 1 = the cell inputs $c_{k-2}$, $c_{k-1}$" if inputs == 2 else "0 = the cell input") if inputs else ""
    note = [f"numbers: {'mixing weights' if normalised else 'alphas'}; box: the edge's strongest op other than none"
            + ("; dashed box: none outweighs it" if any(any(p.none_wins) for p in panels) else "")
            + ("; hatched: op not on this edge" if any((~p.present).any() for p in panels) else "")]
    second = []
    if states:
        second.append(f"edges by the genotype's state numbers ({states})")
    if kept:
        second.append("bold edges: kept in the genotype, grey: dropped")
    if second:
        note.append("; ".join(second))
    return "\n".join(note)


def alphas_figure(alphas: Mapping[str, Any], title: str = "", epoch: int = -1, genotype: Optional[Genotype] = None):
    """The matplotlib figure of :func:`plot_alphas`."""
    plt = pyplot()
    from matplotlib.colors import TwoSlopeNorm

    ops = [str(o) for o in np.asarray(alphas["ops"]).tolist()]
    names = [k for k in getattr(alphas, "files", list(alphas)) if k != "ops" and not k.startswith("edges_")]
    if not names:
        raise NasrunError("alphas: no alpha kinds (normal, reduce, cell0, ...) besides ops")
    histories = {k: np.asarray(alphas[k]) for k in names}
    panels = [alpha_panel(k, histories[k], ops, epoch) for k in names]
    edges = panels[0].weights.shape[0]
    inputs = genotype.inputs if genotype is not None else (_cell_shape(edges) or (None,))[0]
    labels = edge_labels(edges, inputs)
    pairs = _edge_pairs(edges, inputs)
    # one symmetric scale for every panel, to the largest deviation: after a short search the weights differ
    # from uniform in the third decimal, and that is what the colours show
    span = max([float(np.ma.max(np.ma.abs(p.deviation))) for p in panels if p.deviation.count()] + [1e-6])
    norm = TwoSlopeNorm(vmin=-span, vcenter=0.0, vmax=span)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad=(0, 0, 0, 0))  # masked: the hatching shows through
    columns = min(len(panels), 4 if len(ops) <= 6 else 2 if len(panels) <= 2 else 4)
    rows = -(-len(panels) // columns)
    cell_w, cell_h = 0.46, 0.27
    panel_w, panel_h = len(ops) * cell_w + 1.3, edges * cell_h + 1.4
    fig, axes = plt.subplots(rows, columns, figsize=(columns * panel_w + 1.0, rows * panel_h + 1.0), squeeze=False,
                             layout="constrained")
    kept = {}
    if genotype is not None:
        kept = {name: {(int(s), int(d)) for _, s, d in cell.edges} for name, cell in genotype.cells.items()}
    image = None
    for ax, panel in zip(axes.flat, panels):
        image = _draw_weights(ax, panel, ops, norm, cmap)
        _label_panel(ax, panel, ops, pairs, labels, kept,
                     _panel_title(panel, histories[panel.kind], len(panels), inputs, genotype, epoch))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    bar = fig.colorbar(image, ax=axes, fraction=0.03 if columns > 1 else 0.05, pad=0.02, shrink=0.8)
    normalised = all(p.normalised for p in panels)
    label = "weight − 1/k  (k: ops on the edge; 0 = uniform)" if normalised else "alpha − mean over the edge's ops"
    bar.set_label(label, fontsize=9)
    fig.supxlabel(_notes(panels, inputs, kept), fontsize=8, x=0.0, ha="left", color="#333333")
    if title:
        fig.suptitle(wrap_title(title, columns * panel_w + 1.0, 11), fontsize=11, x=0.0, ha="left")
    return fig


def plot_alphas(alphas: Mapping[str, Any], path: str | Path, title: str = "", epoch: int = -1,
                genotype: Optional[Genotype] = None) -> Path:
    """Heatmaps of the mixing weights (edges x ops) of one epoch, one per alpha kind.

    ``alphas`` is an ``alphas.npz`` (or a dict alike): per kind (``normal`` and ``reduce``, or
    ``cell0``, ...) an array of shape (epochs, edges, ops), and ``ops``, the op names. Colour is
    the weight minus the uniform value 1/k of its edge on a diverging scale centred at 0 (one scale
    for every panel); the strongest op other than ``none`` of each edge is boxed; ops an edge does
    not have are hatched. With the ``genotype`` the run derived, its kept edges are in bold.
    """
    return save_png(alphas_figure(alphas, title, epoch, genotype), path)
