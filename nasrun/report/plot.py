"""Figures from run folders: cell diagrams, alpha heatmaps, and per-epoch curves of a sweep.

Each function writes one PNG and returns its path. Cell diagrams are drawn by graphviz's ``dot``
when that program is installed (``shutil.which("dot")``) and by matplotlib otherwise, both with a
layered layout: the cell inputs in the first column, one column per node in state order (the order
of the genotype's printed states), the cell output last. Heatmaps and curves are matplotlib (Agg
backend, no display). matplotlib is an optional dependency (``pip install 'nasrun[plot]'``).
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from nasrun.errors import NasrunError
from nasrun.genotype.genotype import Genotype

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


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise NasrunError("plots need matplotlib: pip install 'nasrun[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight", facecolor="white")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _wrap(text: str, inches: float, fontsize: float) -> str:
    """Break a long title (a report group's overrides) into lines that fit ``inches`` at ``fontsize`` points."""
    import textwrap

    width = max(20, int(inches * 72 / (0.56 * fontsize)))
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) if len(text) > width else text


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


def cell_kind(name: str, genotype_cells: int, inputs: int = 2, reduction: Optional[bool] = None) -> str:
    """One name per cell type: "normal cell", "reduction cell", "cell" (NB201), "cell 3 (reduction)" (per position)."""
    if name.startswith("cell") and name[4:].isdigit():
        kind = f"cell {int(name[4:])}"
        return kind if reduction is None else f"{kind} ({'reduction' if reduction else 'normal'})"
    if name == "normal" and (genotype_cells == 1 or inputs == 1):
        return "cell"
    return {"normal": "normal cell", "reduce": "reduction cell"}.get(name, name)


def _cell_title(name: str, cell: Any, cells: int, inputs: int = 2) -> str:
    skips = sum(1 for op, _, _ in cell.edges if op == "skip_connect")
    return f"{cell_kind(name, cells, inputs, cell.reduction)}: {skips} skip_connect"


# ------------------------------------------------------------------ cell layout
# Lengths in inches: the matplotlib drawing uses one data unit per inch, so font sizes (points) and
# the layout agree at any number of nodes.
COLUMN = 1.55  # between columns
RADIUS = 0.21  # of a state's circle
FIRST_TRACK = 0.47  # height of the first arc track above/below the row of nodes (and of the DARTS inputs)
TRACK = 0.27  # between arc tracks
CORNER = 0.32  # horizontal length of an arc's bend


@dataclass
class Route:
    """How one edge is drawn: a polyline between state centres, where its label goes."""

    op: Optional[str]  # None: an edge into the cell output
    src: int
    dst: int
    straight: bool
    side: int = 0  # +1 above the row of nodes, -1 below (arcs)
    track: int = 0
    points: Any = None  # (n, 2) centre to centre
    label_xy: tuple[float, float] = (0.0, 0.0)
    label_range: tuple[float, float] = (0.0, 0.0)  # where along its track an arc's label may go


LABEL_CHAR, LABEL_HEIGHT = 0.072, 0.17  # inches per character and per line of an 8-point edge label


def _label_box(r: Route, x: float) -> tuple[float, float, float, float]:
    half = LABEL_CHAR * len(r.op or "") / 2 + 0.03
    y = r.label_xy[1]
    return x - half, y - LABEL_HEIGHT / 2, x + half, y + LABEL_HEIGHT / 2


def _overlap(a, b, margin: float = 0.03) -> bool:
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def _place_labels(routes: list[Route]) -> None:
    """Labels of arcs between two columns (where no other arc leaves or reaches a state), the slot nearest
    the arc's middle that collides with no label placed before (straight edges' first, then inner tracks')."""
    placed = [_label_box(r, r.label_xy[0]) for r in routes if r.straight and r.op is not None]
    for r in sorted((r for r in routes if not r.straight and r.op is not None), key=lambda r: (r.track, r.src)):
        lo, hi = r.label_range
        half = LABEL_CHAR * len(r.op or "") / 2
        mid = r.label_xy[0]
        slots = [(k + 0.5) * COLUMN for k in range(int(lo // COLUMN) - 1, int(hi // COLUMN) + 1)]
        slots = sorted((x for x in slots if lo + half <= x <= hi - half), key=lambda x: abs(x - mid))
        for x in slots + [mid]:
            if not any(_overlap(_label_box(r, x), box) for box in placed):
                break
        else:
            x = slots[0] if slots else mid
        r.label_xy = (x, r.label_xy[1])
        placed.append(_label_box(r, x))


@dataclass
class CellLayout:
    pos: dict[int, tuple[float, float]]
    routes: list[Route]
    inputs: int
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    @property
    def width(self) -> float:
        return self.xlim[1] - self.xlim[0]

    @property
    def height(self) -> float:
        return self.ylim[1] - self.ylim[0]


def _column(state: int, nodes: int, inputs: int) -> int:
    if state == -1:
        return nodes + 1
    return 0 if state < inputs else state - inputs + 1


def _track_y(track: int) -> float:
    return FIRST_TRACK + (track - 1) * TRACK


def _quad(p0, c, p1, n: int = 16) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * t * (1 - t) * np.asarray(c) + t * t * np.asarray(p1)


def _lowest_track(taken: list[tuple[int, int, int]], a: int, b: int) -> int:
    used = {t for a2, b2, t in taken if a < b2 and a2 < b}
    t = 1
    while t in used:
        t += 1
    return t


def _assign_tracks(arcs: list[Route], outputs: list[Route], col, forced: Mapping[int, int]) -> None:
    """Put every arc on a side and on the lowest track where it overlaps no arc of that side.

    Shorter arcs first, so longer ones nest outside them; an arc from a DARTS input keeps that input's
    side; any other goes to the side where its track is lower (ties: the side with fewer arcs, then
    alternating, starting above). The arcs into the cell output go last, all on one side (the one
    where they reach the lower track)."""
    taken: dict[int, list[tuple[int, int, int]]] = {1: [], -1: []}
    turn = 1
    for r in arcs:
        a, b = col(r.src), col(r.dst)
        if r.src in forced:
            side = forced[r.src]
        else:
            up, down = _lowest_track(taken[1], a, b), _lowest_track(taken[-1], a, b)
            if up != down:
                side = 1 if up < down else -1
            elif len(taken[1]) != len(taken[-1]):
                side = 1 if len(taken[1]) < len(taken[-1]) else -1
            else:
                side, turn = turn, -turn
        r.side, r.track = side, _lowest_track(taken[side], a, b)
        taken[side].append((a, b, r.track))

    def bundle(side: int) -> list[int]:
        trial = list(taken[side])
        tracks = []
        for r in outputs:
            t = _lowest_track(trial, col(r.src), col(r.dst))
            trial.append((col(r.src), col(r.dst), t))
            tracks.append(t)
        return tracks

    if outputs:
        options = {side: bundle(side) for side in (-1, 1)}
        side = min((-1, 1), key=lambda s: (max(options[s]), len(taken[s])))
        for r, t in zip(outputs, options[side]):
            r.side, r.track = side, t


def _clip(points: np.ndarray, start: tuple[float, float], end: tuple[float, float], radius: float) -> np.ndarray:
    """Cut a centre-to-centre polyline at the two circles (so arrows start and end on the states' rims)."""

    def cut(pts: np.ndarray, centre) -> np.ndarray:
        d = np.hypot(pts[:, 0] - centre[0], pts[:, 1] - centre[1])
        outside = np.nonzero(d > radius)[0]
        if len(outside) == 0:
            return pts
        i = int(outside[0])
        if i == 0:
            return pts
        p_in, p_out = pts[i - 1], pts[i]
        d_in, d_out = d[i - 1], d[i]
        t = (radius - d_in) / max(d_out - d_in, 1e-9)
        return np.vstack([p_in + t * (p_out - p_in), pts[i:]])

    pts = cut(points, start)
    return cut(pts[::-1], end)[::-1]


def cell_layout(cell: Any, nodes: int, inputs: int) -> CellLayout:
    """Positions (inches) of a cell's states and the route of every drawn edge.

    Layered: inputs in column 0 (DARTS: c_{k-2} above, c_{k-1} below the row), node ``inputs + i`` in
    column ``i + 1`` on one row, the cell output in the last column. An edge between neighbouring
    columns is a straight line labelled at its middle; an edge that skips columns is an arc above or
    below the row on a track of its own, labelled at its top, so no arc crosses a state. ``none``
    edges (NB201) are left out."""
    def col(state: int) -> int:
        return _column(state, nodes, inputs)

    pos: dict[int, tuple[float, float]] = {}
    for s in range(inputs):
        pos[s] = (0.0, (FIRST_TRACK if s == 0 else -FIRST_TRACK) if inputs == 2 else
                  (inputs - 1 - 2 * s) * FIRST_TRACK / 2)
    for i in range(nodes):
        pos[inputs + i] = (COLUMN * (i + 1), 0.0)
    pos[-1] = (COLUMN * (nodes + 1), 0.0)

    routes: list[Route] = []
    seen: set[tuple[int, int]] = set()
    drawn = [(str(op), int(src), int(dst)) for op, src, dst in cell.edges if op != "none"]
    into_output = [(None, int(s), -1) for s in cell.concat]
    for op, src, dst in drawn + into_output:
        straight = col(dst) - col(src) == 1 and (src, dst) not in seen
        seen.add((src, dst))
        routes.append(Route(op, src, dst, straight))
    forced = {0: 1, 1: -1} if inputs == 2 else {}
    labelled = sorted((r for r in routes if not r.straight and r.op is not None),
                      key=lambda r: (col(r.dst) - col(r.src), col(r.src), r.dst))
    outputs = sorted((r for r in routes if not r.straight and r.op is None), key=lambda r: -col(r.src))
    _assign_tracks(labelled, outputs, col, forced)

    # where arcs leave and reach a state: the outermost arc nearest the vertical, inner ones tilted further
    leave: dict[tuple[int, int], list[Route]] = {}
    reach: dict[tuple[int, int], list[Route]] = {}
    for r in routes:
        if not r.straight:
            leave.setdefault((r.src, r.side), []).append(r)
            reach.setdefault((r.dst, r.side), []).append(r)
    tilt: dict[tuple[int, str], float] = {}
    for group, end in ((leave, "src"), (reach, "dst")):
        for rs in group.values():
            for k, r in enumerate(sorted(rs, key=lambda r: -r.track)):
                tilt[(id(r), end)] = math.tan(math.radians(min(12.0 + 24.0 * k, 62.0)))

    for r in routes:
        (x0, y0), (x1, y1) = pos[r.src], pos[r.dst]
        if r.straight:
            r.points = np.array([[x0, y0], [x1, y1]])
            r.label_xy = ((x0 + x1) / 2, (y0 + y1) / 2)
            continue
        y = r.side * _track_y(r.track)
        a = x0 + abs(y - y0) * tilt[(id(r), "src")]
        b = x1 - abs(y - y1) * tilt[(id(r), "dst")]
        bend = min(CORNER, max((b - a) / 2 - 0.05, 0.05))
        r.points = np.vstack([_quad((x0, y0), (a, y), (a + bend, y)), [[b - bend, y]],
                              _quad((b - bend, y), (b, y), (x1, y1))])
        r.label_xy = ((x0 + x1) / 2, y)
        r.label_range = (a + bend * 0.5, b - bend * 0.5)
    _place_labels(routes)
    for r in routes:
        r.points = _clip(r.points, pos[r.src], pos[r.dst], RADIUS + 0.015)

    tracks = {side: max([r.track for r in routes if not r.straight and r.side == side], default=0)
              for side in (1, -1)}
    top = max(_track_y(tracks[1]) if tracks[1] else 0.0, max(y for _, y in pos.values()) + RADIUS) + 0.2
    bottom = min(-_track_y(tracks[-1]) if tracks[-1] else 0.0, min(y for _, y in pos.values()) - RADIUS) - 0.2
    return CellLayout(pos, routes, inputs, (-RADIUS - 0.3, pos[-1][0] + RADIUS + 0.3), (bottom, top))


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
    plt = _pyplot()
    names = list(genotype.cells)
    layouts = [cell_layout(genotype.cells[n], genotype.nodes, genotype.inputs) for n in names]
    columns = 1 if len(names) <= 3 else 2
    rows = -(-len(names) // columns)
    width = max(l.width for l in layouts)
    gap = 0.4
    row_heights = [max(l.height for l in layouts[r * columns:(r + 1) * columns]) + TITLE_ROOM for r in range(rows)]
    fig_w = columns * width + (columns - 1) * gap
    title = _wrap(title, fig_w, 12) if title else ""
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

    plt = _pyplot()
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
    title = _wrap(title, width / DPI, 14) if title else ""
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
    return _save(genotype_figure(genotype, title), path)


# ----------------------------------------------------------------- alphas
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


def alphas_figure(alphas: Mapping[str, Any], title: str = "", epoch: int = -1, genotype: Optional[Genotype] = None):
    """The matplotlib figure of :func:`plot_alphas`."""
    plt = _pyplot()
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

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
    targets = [dst for _, dst in pairs]
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
        history = histories[panel.kind]
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
        reduction = None
        if genotype is not None and panel.kind in genotype.cells:
            reduction = genotype.cells[panel.kind].reduction
        name = cell_kind(panel.kind, len(panels), inputs or 2, reduction)
        shown = (history.shape[0] + epoch if epoch < 0 else epoch) + 1 if history.ndim == 3 else None
        ax.set_title(name + (f", epoch {shown} of {history.shape[0]}" if shown else ""), fontsize=10, loc="left")
        ax.set_ylabel("edge (source → node)", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    bar = fig.colorbar(image, ax=axes, fraction=0.03 if columns > 1 else 0.05, pad=0.02, shrink=0.8)
    normalised = all(p.normalised for p in panels)
    label = "weight − 1/k  (k: ops on the edge; 0 = uniform)" if normalised else "alpha − mean over the edge's ops"
    bar.set_label(label, fontsize=9)
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
    fig.supxlabel("\n".join(note), fontsize=8, x=0.0, ha="left", color="#333333")
    if title:
        fig.suptitle(_wrap(title, columns * panel_w + 1.0, 11), fontsize=11, x=0.0, ha="left")
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
    return _save(alphas_figure(alphas, title, epoch, genotype), path)


# ----------------------------------------------------------------- curves
PERCENT_KEYS = ("acc", "error")


def _percent(key: str) -> bool:
    """Accuracies and errors are fractions in metrics.jsonl; benchmark lookups are percent already."""
    return not key.startswith("bench_") and any(part in key for part in PERCENT_KEYS)


def curves_figure(groups: Sequence[tuple[str, Sequence[tuple[str, Sequence[Mapping[str, Any]]]]]],
                  keys: Sequence[tuple[str, str]] = (("skip_normal", "skip connections (normal cell)"),
                                                     ("val_acc", "search-val accuracy (%)"))):
    """The matplotlib figure of :func:`plot_curves`: accuracies and errors (fractions in metrics.jsonl)
    are plotted in percent."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    ncols = max(len(groups), 1)
    fig, axes = plt.subplots(len(keys), ncols, figsize=(4.2 * ncols, 3.0 * len(keys)), squeeze=False,
                             sharey="row")
    for col, (label, runs) in enumerate(groups):
        for row, (key, ylabel) in enumerate(keys):
            ax = axes[row][col]
            scale = 100.0 if _percent(key) else 1.0
            for run_label, rows in runs:
                points = [(r["epoch"] + 1, r[key] * scale) for r in rows if r.get(key) is not None and "epoch" in r]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, marker="o", markersize=3, label=run_label)
            if row == 0:
                ax.set_title(_wrap(label, 4.0, 9), fontsize=9)
            if col == 0:
                ax.set_ylabel(ylabel + (" (%)" if scale == 100.0 and "%" not in ylabel else ""), fontsize=9)
            if row == len(keys) - 1:
                ax.set_xlabel("epoch", fontsize=9)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if key.startswith(("skip", "param_free")):
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_curves(groups: Sequence[tuple[str, Sequence[tuple[str, Sequence[Mapping[str, Any]]]]]], path: str | Path,
                keys: Sequence[tuple[str, str]] = (("skip_normal", "skip connections (normal cell)"),
                                                    ("val_acc", "search-val accuracy (%)"))) -> Path:
    """One panel per group and per key; in each, one line per run (labelled, e.g. by seed) over epochs.

    ``groups`` is ``[(group label, [(run label, metrics rows), ...]), ...]``; rows are metrics.jsonl objects.
    Keys with ``acc`` or ``error`` in their name are plotted in percent.
    """
    return _save(curves_figure(groups, keys), path)
