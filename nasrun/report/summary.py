"""`nasrun report`: turn run and sweep folders into one table per group of overrides (mean ± std).

A *run* is a job folder: a search run, a retrain run or a pipeline job (search and retrain in one
folder). Runs are grouped by the overrides Hydra recorded for them (``.hydra/overrides.yaml``),
leaving out the seed and keys that do not change the experiment (device, progress, data root).
A retrain whose genotype is a search run folder is grouped by that search's overrides and shows
that search's figures. Each group gets the number of runs (completed / failed / unfinished) and,
over its completed stages, the mean ± sample standard deviation (n - 1) of: search-val accuracy,
test accuracy and error (in percent), parameters, skip connections in the normal cell, search and retrain
times (in s, min or h, one unit per column). A search that a retraining in the same report retrained is
listed once, in the retraining's row.

Writes ``summary.csv`` and ``summary.md``; ``--plot`` adds PNGs under ``plots/``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from nasrun.errors import NasrunError
from nasrun.report.run_folders import (
    EVIDENCE_PREFIX,
    METRICS,
    Run,
    find_run_folders,
    load_run,
    resolved_path,
)


def columns(groups: Sequence["Group"]) -> list[tuple[str, str, float, str]]:
    """The table's columns: the fixed ones, then the evidence any run of the groups recorded."""
    extra = sorted({k for g in groups for r in g.runs for k in r.evidence()})
    out = list(METRICS)
    if "eigenvalue" in extra:
        out.append(("eigenvalue", "eigenvalue", 1.0, ".3g"))
    out += [(k, f"{k[len(EVIDENCE_PREFIX):]} (bench)", 1.0, ".2f") for k in extra if k.startswith(EVIDENCE_PREFIX)]
    return out


# figures of the search stage: counted once per search run folder in a group (several retrainings of one
# search share them)
SEARCH_KEYS = ("search_val_acc", "search_hours")


@dataclass
class Group:
    key: tuple
    kind: str
    overrides: list[str]
    runs: list[Run] = field(default_factory=list)
    label: str = ""

    def count(self, status: str) -> int:
        return sum(1 for r in self.runs if r.status == status)

    @property
    def unfinished(self) -> int:
        return len(self.runs) - self.count("completed") - self.count("failed")

    def stats(self, key: str) -> tuple[int, Optional[float], Optional[float]]:
        values, seen = [], set()
        for r in self.runs:
            if key in SEARCH_KEYS and r.search_folder is not None:
                where = resolved_path(r.search_folder)
                if where in seen:
                    continue
                seen.add(where)
            v = r.metrics()[key]
            if v is not None and math.isfinite(v):
                values.append(v)
        return summarize(values)


def summarize(values: Sequence[float]) -> tuple[int, Optional[float], Optional[float]]:
    """n, mean and sample standard deviation (n - 1; None below two values)."""
    if not values:
        return 0, None, None
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return len(values), mean, std


def collect(paths: Sequence[str | Path]) -> list[Group]:
    """Runs under ``paths`` grouped by kind and overrides other than the seed, in a stable order."""
    groups: dict[tuple, Group] = {}
    runs = [load_run(folder) for folder in find_run_folders(paths)]
    # a search that a retraining in this report retrained (the quickstart's search/ and retrain/, a
    # retraining of a sweep's search) is listed once: in the retraining's row, which shows its figures
    retrained = {resolved_path(r.search_folder) for r in runs if r.kind == "retrain" and r.search_folder is not None}
    for run in runs:
        if run.kind == "search" and resolved_path(run.folder) in retrained:
            continue
        key = (run.kind, tuple(run.overrides))
        groups.setdefault(key, Group(key, run.kind, run.overrides)).runs.append(run)
    ordered = list(groups.values())
    for g in ordered:
        g.runs.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, str(r.folder)))
    shared = shared_overrides(ordered)
    kinds = {g.kind for g in ordered}
    for g in ordered:
        own = [o for o in g.overrides if o not in shared]
        g.label = ((f"{g.kind}: " if len(kinds) > 1 else "") + (" ".join(own) or "(shared overrides only)"))
    ordered.sort(key=lambda g: (g.kind, g.label))
    return ordered


def shared_overrides(groups: Sequence[Group]) -> list[str]:
    if not groups:
        return []
    common = set(groups[0].overrides)
    for g in groups[1:]:
        common &= set(g.overrides)
    return sorted(common) if len(groups) > 1 else []


# ---------------------------------------------------------------- writing
def _fmt(n: int, mean: Optional[float], std: Optional[float], scale: float, spec: str) -> str:
    if mean is None:
        return "–"
    text = format(mean * scale, spec)
    return text + (f" ± {format(std * scale, spec)}" if std is not None else "")


def duration_unit(hours: Sequence[float]) -> tuple[str, float, int]:
    """One unit for a column of durations (in hours): ``(name, per hour, decimals)``.

    Seconds below a minute, minutes below an hour, else hours, by the column's largest value; three
    significant digits of that value (``14.1 min``, ``2.35 h``, ``45.0 s``)."""
    largest = max((abs(h) for h in hours if h is not None and math.isfinite(h)), default=0.0)
    if largest >= 1.0:
        name, factor = "h", 1.0
    elif largest >= 1 / 60:
        name, factor = "min", 60.0
    else:
        name, factor = "s", 3600.0
    value = largest * factor
    decimals = max(0, 2 - math.floor(math.log10(value))) if value > 0 else 1
    return name, factor, min(decimals, 3)


def format_duration(mean: Optional[float], std: Optional[float], unit: tuple[str, float, int]) -> str:
    """``mean ± std unit`` of durations in hours, in the column's unit (see :func:`duration_unit`)."""
    if mean is None:
        return "–"
    name, factor, decimals = unit
    text = f"{mean * factor:.{decimals}f}"
    return text + (f" ± {std * factor:.{decimals}f}" if std is not None else "") + f" {name}"


def table_rows(groups: Sequence[Group]) -> list[list[str]]:
    units = {key: duration_unit([g.stats(key)[1] for g in groups if g.stats(key)[1] is not None])
             for key, _, _, spec in METRICS if spec == "duration"}
    rows = []
    for g in groups:
        row = [g.label, str(len(g.runs)), str(g.count("completed")), str(g.count("failed") + g.unfinished)]
        for key, _, scale, spec in columns(groups):
            n, mean, std = g.stats(key)
            row.append(format_duration(mean, std, units[key]) if spec == "duration" else _fmt(n, mean, std, scale, spec))
        rows.append(row)
    return rows


HEADINGS = ["group", "runs", "completed", "failed / unfinished"]


def headings(groups: Sequence[Group]) -> list[str]:
    """The table's headings: the run counts, then one per column of :func:`columns`."""
    return HEADINGS + [h for _, h, _, _ in columns(groups)]
NOTE = ("mean ± sample standard deviation (n - 1) over the completed runs of each group (normally its seeds); "
        "a value without ± comes from one run; – means no run has it; accuracies and errors in percent; "
        "times are wall-clock")


def write_csv(groups: Sequence[Group], path: Path) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = ["group", "kind", "overrides", "runs", "completed", "failed", "unfinished"]
    for key, _, scale, _ in columns(groups):
        unit = "_pct" if scale == 100.0 else ""
        header += [f"{key}{unit}_mean", f"{key}{unit}_std", f"{key}_n"]
    writer.writerow(header)
    for g in groups:
        row: list[Any] = [g.label, g.kind, " ".join(g.overrides), len(g.runs), g.count("completed"),
                          g.count("failed"), g.unfinished]
        for key, _, scale, _ in columns(groups):
            n, mean, std = g.stats(key)
            row += ["" if mean is None else repr(mean * scale), "" if std is None else repr(std * scale), n]
        writer.writerow(row)
    path.write_text(buf.getvalue())
    return path


def write_markdown(groups: Sequence[Group], path: Path, sources: Sequence[Path]) -> Path:
    lines = ["# nasrun report", "", "Runs from: " + ", ".join(f"`{s}`" for s in sources), ""]
    shared = shared_overrides(groups)
    if shared:
        lines += ["Overrides shared by every group: " + " ".join(f"`{o}`" for o in shared), ""]
    heads = headings(groups)
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in table_rows(groups):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines += ["", NOTE + ".", ""]
    failed = [r for g in groups for r in g.runs if r.status != "completed"]
    if failed:
        lines += ["## Runs that did not complete", ""]
        lines += [f"- `{r.folder}`: {r.status}" + (f" ({r.reason})" if r.reason else "") for r in failed]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def print_table(groups: Sequence[Group], out: Optional[Any] = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out) if out is not None else Console()
    if not console.is_terminal:
        console = Console(file=out, width=max(console.width, 200))
    table = Table(title="nasrun report", caption=NOTE, caption_justify="left")
    for i, heading in enumerate(headings(groups)):
        table.add_column(heading, justify="left" if i == 0 else "right", overflow="fold")
    for row in table_rows(groups):
        table.add_row(*row)
    shared = shared_overrides(groups)
    if shared:
        console.print("overrides shared by every group: " + " ".join(shared), markup=False, highlight=False)
    console.print(table)
    failed = [r for g in groups for r in g.runs if r.status != "completed"]
    for r in failed:
        console.print(f"{r.status}: {r.folder}" + (f"  ({r.reason})" if r.reason else ""), markup=False,
                      highlight=False)


def default_out(paths: Sequence[Path]) -> Path:
    if len(paths) == 1:
        return paths[0]
    return Path(os.path.commonpath([str(p) for p in paths]))


def report(paths: Sequence[str | Path], out_dir: Optional[str | Path] = None, plot: bool = False,
           stdout: Optional[Any] = None) -> tuple[list[Group], Path]:
    sources = [Path(p).resolve() for p in paths]
    groups = collect(sources)
    if not groups:
        raise NasrunError("nasrun report: no run folders (with result.json or .hydra/) under "
                          + ", ".join(str(p) for p in paths))
    out = Path(out_dir).resolve() if out_dir else default_out([p if p.is_dir() else p.parent for p in sources])
    out.mkdir(parents=True, exist_ok=True)
    print_table(groups, stdout)
    written = [write_csv(groups, out / "summary.csv"), write_markdown(groups, out / "summary.md", sources)]
    if plot:
        from nasrun.report.run_plots import write_plots

        written += write_plots([(g.label, g.runs) for g in groups], out / "plots", out)
    print(f"wrote {len(written)} files to {out}: summary.csv, summary.md"
          + (f" and {len(written) - 2} plots under plots/" if plot else ""), file=stdout or sys.stdout)
    return groups, out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nasrun report",
        description="Summarise run and sweep folders: one row per group of overrides (the seed left out), "
                    "mean ± sample std over the group's runs; writes summary.csv and summary.md.")
    parser.add_argument("folders", nargs="+", help="sweep folders, run folders or folders holding them")
    parser.add_argument("--plot", action="store_true",
                        help="also write PNGs: per-epoch skip count and search-val accuracy, final alphas, cells")
    parser.add_argument("--out", help="where to write the summary (default: the folder given, or the folders' "
                                      "common parent)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        report(args.folders, args.out, args.plot)
    except NasrunError as exc:
        message = str(exc)
        print(message if message.startswith("nasrun report") else f"nasrun report: error: {message}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
