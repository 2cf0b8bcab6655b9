"""Cell diagrams of a genotype: one PNG with every cell, drawn by graphviz's ``dot`` or by matplotlib.

``dot`` draws when that program is installed (``shutil.which("dot")``), matplotlib otherwise (and when
``dot`` fails); both in the layered layout of :mod:`nasrun.report.cell_layout`: the cell inputs in the
first column, one column per node in state order, the cell output last, edges coloured by op family.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from nasrun.genotype.genotype import Genotype
from nasrun.report.cell_layout import RADIUS, cell_layout
from nasrun.report.plot import cell_kind, pyplot, save_png, wrap_title

log = logging.getLogger(__name__)

# One hue per op family (convolutions blue/purple/green, pooling orange/brown, skip red, none grey),
# dark enough for text on white and distinct within a family.
OP_COLORS = {
    "sep_conv_3x3": "#1f5fbf",
    "sep_conv_5x5": "#0e8a9e",
    "sep_conv_7x7": "#0b2f6b",
    "dil_conv_3x3": "#7434b0",
    "dil_conv_5x5": "#c02a8e",
    "conv_7x1_1x7": "#2e7d32",
    "nor_conv_1x1": "#2e7d32",
    "nor_conv_3x3": "#1f5fbf",
    "max_pool_3x3": "#e06c00",
    "avg_pool_3x3": "#8d5a1b",
    "skip_connect": "#d62020",
    "none": "#808080",
    "noise": "#9e9e9e",
}
FAMILY_COLORS = {"conv": ["#3949ab", "#00838f", "#6a1b9a", "#2e7d32"], "pool": ["#ef6c00", "#8d5a1b"],
                 "skip": ["#d62020"], "none": ["#808080"]}
INPUT_FACE, NODE_FACE, OUTPUT_FACE, NODE_EDGE = "#fde3b8", "#d4e6f7", "#fff2a8", "#333333"


def op_family(op: str) -> str:
    """conv, pool, skip or none (none, noise and anything unknown without weights)."""
    if "conv" in op:
        return "conv"
    if "pool" in op:
        return "pool"
    if "skip" in op or op in ("identity", "id"):
        return "skip"
    return "none"


def _color(op: str) -> str:
    if op in OP_COLORS:
        return OP_COLORS[op]
    palette = FAMILY_COLORS[op_family(op)]
    return palette[sum(map(ord, op)) % len(palette)]


# ------------------------------------------------------------------ names
def _state_label(state: int, inputs: int) -> str:
    """Inputs as c_{k-2}, c_{k-1} (DARTS) or "in" (NB201); nodes by their state number, as the genotype prints them;
    the cell output (state -1) as c_{k} or "out"."""
    if state == -1:
        return "$c_{k}$" if inputs == 2 else "out"
    if state < inputs:
        if inputs == 2:
            return ("$c_{k-2}$", "$c_{k-1}$")[state]
        return "in" if inputs == 1 else f"in{state}"
    return str(state)


def _cell_title(name: str, cell: Any, cells: int, inputs: int = 2) -> str:
    skips = sum(1 for op, _, _ in cell.edges if op == "skip_connect")
    return f"{cell_kind(name, cells, inputs, cell.reduction)}: {skips} skip_connect"


# ------------------------------------------------------------------ matplotlib
def draw_cell(ax, cell: Any, nodes: int, inputs: int, title: str) -> None:
    """One cell on a matplotlib axis in the layered layout of :func:`cell_layout`: states as circles
    (inputs, numbered nodes, output), an arrow per kept edge coloured by its op family and labelled
    with its op, dashed grey arrows into the cell output. One data unit is one inch (equal aspect)."""
    from matplotlib.patches import Circle, FancyArrowPatch
    from matplotlib.path import Path as MplPath

    layout = cell_layout(cell, nodes, inputs)
    for state, (x, y) in layout.pos.items():
        face = OUTPUT_FACE if state == -1 else INPUT_FACE if state < inputs else NODE_FACE
        ax.add_patch(Circle((x, y), RADIUS, facecolor=face, edgecolor=NODE_EDGE, linewidth=1.2, zorder=3))
        label = _state_label(state, inputs)
        ax.text(x, y, label, ha="center", va="center", fontsize=9 if label.startswith("$") else 10.5,
                zorder=4, gid=f"state:{state}")
    for r in layout.routes:
        color = "#8a8a8a" if r.op is None else _color(r.op)
        ax.add_patch(FancyArrowPatch(path=MplPath(r.points), arrowstyle="-|>", mutation_scale=11,
                                     color=color, linewidth=1.0 if r.op is None else 1.8,
                                     linestyle="--" if r.op is None else "-", zorder=1 if r.op is None else 2,
                                     shrinkA=0, shrinkB=0))
        if r.op is not None:
            ax.text(*r.label_xy, r.op, ha="center", va="center", fontsize=8, color=color, zorder=5,
                    gid=f"edge:{r.src}->{r.dst}",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.92})
    if title:
        ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlim(*layout.xlim)
    ax.set_ylim(*layout.ylim)
    ax.set_aspect("equal")
    ax.axis("off")


TITLE_ROOM = 0.4  # inches above each panel for its title


def genotype_figure(genotype: Genotype, title: str = ""):
    """The matplotlib figure of :func:`plot_genotype`: one panel per cell, one inch per data unit."""
    plt = pyplot()
    names = list(genotype.cells)
    layouts = [cell_layout(genotype.cells[n], genotype.nodes, genotype.inputs) for n in names]
    columns = 1 if len(names) <= 3 else 2
    rows = -(-len(names) // columns)
    width = max(l.width for l in layouts)
    gap = 0.4
    row_heights = [max(l.height for l in layouts[r * columns:(r + 1) * columns]) + TITLE_ROOM for r in range(rows)]
    fig_w = columns * width + (columns - 1) * gap
    title = wrap_title(title, fig_w, 12) if title else ""
    head = 0.12 + 0.22 * (title.count("\n") + 1) if title else 0.0
    fig_h = head + sum(row_heights)
    fig = plt.figure(figsize=(fig_w, fig_h))
    top = fig_h - head
    for r in range(rows):
        for c in range(columns):
            i = r * columns + c
            if i >= len(names):
                break
            lay = layouts[i]
            left = c * (width + gap) + (width - lay.width) / 2
            bottom = top - TITLE_ROOM - lay.height
            ax = fig.add_axes((left / fig_w, bottom / fig_h, lay.width / fig_w, lay.height / fig_h))
            cell = genotype.cells[names[i]]
            draw_cell(ax, cell, genotype.nodes, genotype.inputs,
                      _cell_title(names[i], cell, len(names), genotype.inputs))
        top -= row_heights[r]
    if title:
        fig.text(0.0, 1.0 - 0.1 / fig_h, title, ha="left", va="top", fontsize=12, fontweight="bold")
    return fig


# ------------------------------------------------------------------ graphviz
def _dot_str(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_html(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _dot_state(state: int, inputs: int) -> str:
    if state == -1:
        return "<c<sub>k</sub>>" if inputs == 2 else '"out"'
    if state < inputs and inputs == 2:
        return ("<c<sub>k-2</sub>>", "<c<sub>k-1</sub>>")[state]
    return _dot_str(_state_label(state, inputs))


def cell_dot(cell: Any, nodes: int, inputs: int, title: str = "") -> str:
    """A DOT description of one cell (rankdir=LR), in the layered layout of the matplotlib drawing.

    The inputs share the first rank (c_{k-2} above c_{k-1}), every node has its own rank in state order
    (an invisible chain through the nodes), the output is last; edges are coloured and labelled by op,
    edges into the output dashed grey; ``none`` edges (NB201) are left out."""
    def node(state: int) -> str:
        return "out" if state == -1 else f"s{state}"

    out = ["digraph cell {",
           "  rankdir=LR; nodesep=0.3; ranksep=0.8; splines=true; bgcolor=white; pad=0.15;",
           '  graph [fontname="Helvetica", fontsize=14, labelloc=t, labeljust=l'
           + (f", label=<{_dot_html(title)}>" if title else "") + "];",
           f'  node [fontname="Helvetica", fontsize=13, style=filled, color="{NODE_EDGE}", penwidth=1.2, '
           'shape=circle, width=0.45, fixedsize=true];',
           '  edge [fontname="Helvetica", fontsize=11, penwidth=1.8, arrowsize=0.8];']
    for s in range(inputs):
        out.append(f'  {node(s)} [label={_dot_state(s, inputs)}, fillcolor="{INPUT_FACE}"];')
    for s in range(inputs, inputs + nodes):
        out.append(f'  {node(s)} [label={_dot_state(s, inputs)}, fillcolor="{NODE_FACE}"];')
    out.append(f'  {node(-1)} [label={_dot_state(-1, inputs)}, fillcolor="{OUTPUT_FACE}"];')
    if inputs > 1:  # one rank, c_{k-2} above c_{k-1} (a flat edge orders its rank)
        out.append("  { rank=same; " + " ".join(node(s) for s in range(inputs)) + "; }")
        out.append("  " + " -> ".join(node(s) for s in range(inputs)) + " [style=invis];")
    chain = [node(s) for s in range(inputs - 1, inputs + nodes)] + [node(-1)]
    out.append("  " + " -> ".join(chain) + " [style=invis, weight=4];")
    for op, src, dst in cell.edges:
        if op == "none":
            continue
        color = _color(str(op))
        out.append(f'  {node(int(src))} -> {node(int(dst))} [label={_dot_str(op)}, color="{color}", '
                   f'fontcolor="{color}"];')
    for s in cell.concat:
        out.append(f'  {node(int(s))} -> {node(-1)} [style=dashed, color="#8a8a8a", penwidth=1.0, arrowsize=0.6];')
    out.append("}")
    return "\n".join(out) + "\n"


def genotype_dot(genotype: Genotype) -> dict[str, str]:
    """The DOT description of every cell of a genotype, by cell name (see :func:`cell_dot`)."""
    return {name: cell_dot(cell, genotype.nodes, genotype.inputs, _cell_title(name, cell, len(genotype.cells),
                                                                                genotype.inputs))
            for name, cell in genotype.cells.items()}


DPI = 120


def _plot_with_dot(dot: str, genotype: Genotype, path: Path, title: str) -> bool:
    """Render every cell with graphviz and stack the images (in the genotype's order, two columns past
    three cells) under the title; False (after a warning) when dot fails, so matplotlib draws instead."""
    import tempfile

    plt = pyplot()
    images = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, text in enumerate(genotype_dot(genotype).values()):
                png = Path(tmp) / f"cell{i}.png"
                subprocess.run([dot, "-Tpng", f"-Gdpi={DPI}", "-o", str(png)], input=text.encode(),
                               capture_output=True, check=True, timeout=60)
                images.append(plt.imread(png))
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        log.warning("graphviz dot could not draw %s (%s%s); drawing it with matplotlib", path, exc,
                    f": {detail.decode(errors='replace').strip()[:200]}" if detail else "")
        return False
    columns = 1 if len(images) <= 3 else 2
    rows = [images[r:r + columns] for r in range(0, len(images), columns)]
    col_w = max(im.shape[1] for im in images)
    gap = 20
    width = columns * col_w + (columns - 1) * gap
    title = wrap_title(title, width / DPI, 14) if title else ""
    head = 16 + 28 * (title.count("\n") + 1) if title else 0
    heights = [max(im.shape[0] for im in row) for row in rows]
    height = head + sum(heights) + gap * (len(rows) - 1)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    top = height - head
    for row, h in zip(rows, heights):
        for c, im in enumerate(row):
            fig.figimage(im, xo=c * (col_w + gap), yo=top - im.shape[0], origin="upper")
        top -= h + gap
    if title:
        fig.text(8 / width, 1 - 8 / height, title, ha="left", va="top", fontsize=14, fontweight="bold")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return True


def plot_genotype(genotype: Genotype, path: str | Path, title: str = "") -> Path:
    """Every cell of a genotype (normal and reduction, the NB201 cell, or one per position) in one PNG:
    with graphviz's ``dot`` when it is installed, else with matplotlib."""
    path = Path(path)
    dot = shutil.which("dot")
    if dot and _plot_with_dot(dot, genotype, path, title):
        return path
    return save_png(genotype_figure(genotype, title), path)

