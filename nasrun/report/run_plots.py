"""The PNGs ``nasrun report --plot`` writes: per-epoch curves of every group, final alphas and cells of every run."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nasrun.report.run_folders import EVIDENCE_PREFIX, Run, resolved_path


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:100] or "run"


def write_plots(groups: Sequence[tuple[str, Sequence[Run]]], out_dir: Path, root: Path) -> list[Path]:
    """Curves of every group (one panel each, one line per seed), final alphas and cells of every run.

    ``groups`` holds the label and the runs of each group of the report, in its order."""
    import numpy as np

    from nasrun.genotype.genotype import Genotype
    from nasrun.report.alpha_figures import plot_alphas
    from nasrun.report.cell_diagram import plot_genotype
    from nasrun.report.curves import plot_curves
    from nasrun.run.files import read_jsonl

    written: list[Path] = []
    curves = []
    for label, runs in groups:
        lines, seen = [], set()
        for r in runs:
            if r.search_folder is None or not (r.search_folder / "metrics.jsonl").is_file():
                continue
            if resolved_path(r.search_folder) in seen:  # several retrainings of one search: one line
                continue
            seen.add(resolved_path(r.search_folder))
            seed = (r.search or {}).get("seed", r.seed) if r.kind == "retrain" else r.seed
            lines.append((f"seed {seed}", read_jsonl(r.search_folder / "metrics.jsonl")))
        curves.append((label, lines))
    if any(lines for _, lines in curves):
        written.append(plot_curves(curves, out_dir / "curves.png", keys=curve_keys(curves)))
    drawn: set[Path] = set()
    for label, runs in groups:
        for r in runs:
            try:
                name = _slug(str(r.folder.relative_to(root)))
            except ValueError:
                name = _slug(r.folder.name)
            searched = (r.search or {}).get("seed") if r.kind == "retrain" else None
            title = f"{label}  seed {r.seed}" if searched is None or searched == r.seed else \
                f"{label}  search seed {searched}, retrain seed {r.seed}"
            genotype = None
            if r.search_folder is not None and (r.search_folder / "genotype.json").is_file():
                genotype = Genotype.load(r.search_folder / "genotype.json")
            else:
                saved = (r.search or {}).get("genotype") or (r.retrain or {}).get("genotype")
                genotype = Genotype.from_dict(saved) if saved else None
            alphas = r.search_folder / "alphas.npz" if r.search_folder is not None else None
            if alphas is not None and alphas.is_file() and resolved_path(alphas) not in drawn:
                drawn.add(resolved_path(alphas))
                with np.load(alphas) as data:
                    written.append(plot_alphas({k: data[k] for k in data.files}, out_dir / "alphas" / f"{name}.png",
                                               title=title, genotype=genotype))
            if genotype is not None:
                written.append(plot_genotype(genotype, out_dir / "cells" / f"{name}.png", title=title))
    return written


def curve_keys(curves: Sequence[tuple[str, Sequence[tuple[str, Sequence[dict]]]]]) -> list[tuple[str, str]]:
    """The curves to draw: skip count and search-val accuracy, then the evidence the runs recorded."""
    seen = {k for _, lines in curves for _, rows in lines for row in rows[-1:] for k in row}
    keys = [("skip_normal", "skip connections (normal cell)"), ("val_acc", "search-val accuracy (%)")]
    if "eigenvalue" in seen:
        keys.append(("eigenvalue", "Hessian eigenvalue (alphas)"))
    bench = sorted(k for k in seen if k.startswith(EVIDENCE_PREFIX))
    test = [k for k in bench if k.endswith("test")] or bench
    if test:
        keys.append((test[0], f"benchmark {test[0][len(EVIDENCE_PREFIX):]} (%)"))
    return keys


