"""What every figure module shares: matplotlib without a display, saving a PNG, titles that wrap, cell names.

The figures themselves are in :mod:`nasrun.report.cell_diagram` (cells of a genotype, with
:mod:`nasrun.report.cell_layout` placing their states and edges), :mod:`nasrun.report.alpha_figures`
(alpha heatmaps) and :mod:`nasrun.report.curves` (per-epoch curves of a sweep). matplotlib is an
optional dependency (``pip install 'nasrun[plot]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from nasrun.errors import NasrunError


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display), or one line on how to install matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise NasrunError("plots need matplotlib: pip install 'nasrun[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (folders made as needed), close it and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight", facecolor="white")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def wrap_title(text: str, inches: float, fontsize: float) -> str:
    """Break a long title (a report group's overrides) into lines that fit ``inches`` at ``fontsize`` points."""
    import textwrap

    width = max(20, int(inches * 72 / (0.56 * fontsize)))
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) if len(text) > width else text


def cell_kind(name: str, genotype_cells: int, inputs: int = 2, reduction: Optional[bool] = None) -> str:
    """One name per cell type: "normal cell", "reduction cell", "cell" (NB201), "cell 3 (reduction)" (per position)."""
    if name.startswith("cell") and name[4:].isdigit():
        kind = f"cell {int(name[4:])}"
        return kind if reduction is None else f"{kind} ({'reduction' if reduction else 'normal'})"
    if name == "normal" and (genotype_cells == 1 or inputs == 1):
        return "cell"
    return {"normal": "normal cell", "reduce": "reduction cell"}.get(name, name)
