"""Where the states and edges of one cell go: the layered layout both cell drawings share.

The cell inputs in the first column, one column per node in state order (the order of the genotype's
printed states), the cell output last. Lengths are in inches: the matplotlib drawing uses one data unit
per inch, so font sizes (points) and the layout agree at any number of nodes. Geometry only (numpy);
:mod:`nasrun.report.cell_diagram` draws it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np


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



def _state_positions(nodes: int, inputs: int) -> dict[int, tuple[float, float]]:
    """Inputs in column 0 (DARTS: c_{k-2} above, c_{k-1} below the row), node ``inputs + i`` in column
    ``i + 1`` on one row, the cell output (state -1) in the last column."""
    pos: dict[int, tuple[float, float]] = {}
    for s in range(inputs):
        pos[s] = (0.0, (FIRST_TRACK if s == 0 else -FIRST_TRACK) if inputs == 2 else
                  (inputs - 1 - 2 * s) * FIRST_TRACK / 2)
    for i in range(nodes):
        pos[inputs + i] = (COLUMN * (i + 1), 0.0)
    pos[-1] = (COLUMN * (nodes + 1), 0.0)
    return pos


def _routes(cell: Any, inputs: int, col: Callable[[int], int]) -> list[Route]:
    """A route per drawn edge and per edge into the output: straight between neighbouring columns (the
    first of parallel edges), else an arc on its side and track (see :func:`_assign_tracks`)."""
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
    return routes


def _tilts(routes: list[Route]) -> dict[tuple[int, str], float]:
    """Where arcs leave and reach a state: the outermost arc nearest the vertical, inner ones tilted further
    (the tangent of the angle from the vertical, by ``(id(route), "src" or "dst")``)."""
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
    return tilt


def _trace(routes: list[Route], pos: Mapping[int, tuple[float, float]]) -> None:
    """The centre-to-centre polyline of every route, and where its label goes (a straight edge's middle,
    an arc's top; an arc's label may move along ``label_range``)."""
    tilt = _tilts(routes)
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


def _vertical_extent(routes: list[Route], pos: Mapping[int, tuple[float, float]]) -> tuple[float, float]:
    """(bottom, top) of the drawing: the outermost arc track or state rim on each side, plus a margin."""
    tracks = {side: max([r.track for r in routes if not r.straight and r.side == side], default=0)
              for side in (1, -1)}
    top = max(_track_y(tracks[1]) if tracks[1] else 0.0, max(y for _, y in pos.values()) + RADIUS) + 0.2
    bottom = min(-_track_y(tracks[-1]) if tracks[-1] else 0.0, min(y for _, y in pos.values()) - RADIUS) - 0.2
    return bottom, top


def cell_layout(cell: Any, nodes: int, inputs: int) -> CellLayout:
    """Positions (inches) of a cell's states and the route of every drawn edge.

    Layered: inputs in column 0 (DARTS: c_{k-2} above, c_{k-1} below the row), node ``inputs + i`` in
    column ``i + 1`` on one row, the cell output in the last column. An edge between neighbouring
    columns is a straight line labelled at its middle; an edge that skips columns is an arc above or
    below the row on a track of its own, labelled at its top, so no arc crosses a state. ``none``
    edges (NB201) are left out."""
    def col(state: int) -> int:
        return _column(state, nodes, inputs)

    pos = _state_positions(nodes, inputs)
    routes = _routes(cell, inputs, col)
    _trace(routes, pos)
    _place_labels(routes)
    for r in routes:
        r.points = _clip(r.points, pos[r.src], pos[r.dst], RADIUS + 0.015)
    xlim = (-RADIUS - 0.3, pos[-1][0] + RADIUS + 0.3)
    return CellLayout(pos, routes, inputs, xlim, _vertical_extent(routes, pos))
