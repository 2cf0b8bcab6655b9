"""Per-epoch curves of a sweep: one panel per group and key, one line per run (e.g. per seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from nasrun.report.plot import pyplot, save_png, wrap_title

PERCENT_KEYS = ("acc", "error")


def _percent(key: str) -> bool:
    """Accuracies and errors are fractions in metrics.jsonl; benchmark lookups are percent already."""
    return not key.startswith("bench_") and any(part in key for part in PERCENT_KEYS)


def curves_figure(groups: Sequence[tuple[str, Sequence[tuple[str, Sequence[Mapping[str, Any]]]]]],
                  keys: Sequence[tuple[str, str]] = (("skip_normal", "skip connections (normal cell)"),
                                                     ("val_acc", "search-val accuracy (%)"))):
    """The matplotlib figure of :func:`plot_curves`: accuracies and errors (fractions in metrics.jsonl)
    are plotted in percent."""
    plt = pyplot()
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
                ax.set_title(wrap_title(label, 4.0, 9), fontsize=9)
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
    return save_png(curves_figure(groups, keys), path)
