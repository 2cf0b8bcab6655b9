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
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from nasrun.errors import NasrunError

RESULT = "result.json"
# override keys that never separate groups
IGNORED_KEYS = ("seed", "progress", "device", "dataset.root", "dataset.download")

# (column key, table heading, unit scale, format); "duration": hours shown in s, min or h, one unit per column
METRICS = [
    ("search_val_acc", "search-val acc (%)", 100.0, ".2f"),
    ("test_acc", "test acc (%)", 100.0, ".2f"),
    ("test_error", "test error (%)", 100.0, ".2f"),
    ("params_m", "params (M)", 1.0, ".3g"),
    ("skip_normal", "skip (normal)", 1.0, ".3g"),
    ("search_hours", "search time", 1.0, "duration"),
    ("retrain_hours", "retrain time", 1.0, "duration"),
]
#: Columns a search adds when it tracked them: the Hessian eigenvalue and benchmark lookups (already in percent).
EVIDENCE_PREFIX = "bench_"


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
class Run:
    """One job folder and what its stages produced."""

    folder: Path
    kind: str  # search | retrain | pipeline
    status: str  # completed | failed | interrupted | unfinished
    reason: Optional[str] = None
    seed: Optional[int] = None
    overrides: list[str] = field(default_factory=list)
    search: Optional[dict] = None
    search_folder: Optional[Path] = None
    retrain: Optional[dict] = None
    retrain_folder: Optional[Path] = None

    def evidence(self) -> dict[str, Optional[float]]:
        """The eigenvalue and benchmark lookups of the search's last epoch, when it tracked them."""
        final = (self.search or {}).get("final") or {} if (self.search or {}).get("status") == "completed" else {}
        return {k: v for k, v in final.items() if k == "eigenvalue" or k.startswith(EVIDENCE_PREFIX)}

    def metrics(self) -> dict[str, Optional[float]]:
        s = self.search if (self.search or {}).get("status") == "completed" else None
        r = self.retrain if (self.retrain or {}).get("status") == "completed" else None
        out: dict[str, Optional[float]] = {key: None for key, *_ in METRICS}
        if s:
            final = s.get("final") or {}
            out["search_val_acc"] = final.get("val_acc")
            out["skip_normal"] = final.get("skip_normal")
            if s.get("wall_seconds") is not None:
                out["search_hours"] = s["wall_seconds"] / 3600
        if r:
            out["test_acc"] = r.get("test_acc")
            out["test_error"] = r.get("test_error")
            if out["test_error"] is None and out["test_acc"] is not None:
                out["test_error"] = 1.0 - out["test_acc"]
            if r.get("params") is not None:
                out["params_m"] = r["params"] / 1e6
            if r.get("wall_seconds") is not None:
                out["retrain_hours"] = r["wall_seconds"] / 3600
            if out["skip_normal"] is None and r.get("genotype"):
                out["skip_normal"] = _skips(r["genotype"])
        out.update(self.evidence())
        return out


def _skips(genotype: Any) -> Optional[int]:
    """Skip connections in the normal cells of a genotype payload (either file format)."""
    from nasrun.genotype.genotype import Genotype

    try:
        return Genotype.from_dict(genotype, source="result.json").count("skip_connect", "normal")
    except Exception:  # noqa: BLE001 - a summary column; an unreadable genotype leaves it empty
        return None


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
                where = _resolved(r.search_folder)
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


# ---------------------------------------------------------------- reading
def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _hydra_dir(folder: Path) -> Optional[Path]:
    """The .hydra folder that describes a run folder (its own, or its pipeline job's)."""
    for candidate in (folder, folder.parent):
        if (candidate / ".hydra").is_dir():
            return candidate / ".hydra"
    return None


def _overrides(folder: Path) -> Optional[list[str]]:
    hydra_dir = _hydra_dir(folder)
    if hydra_dir is None:
        return None
    data = _read_yaml(hydra_dir / "overrides.yaml")
    return [str(o) for o in data] if isinstance(data, list) else []


def _job_name(folder: Path) -> Optional[str]:
    if not (folder / ".hydra" / "hydra.yaml").is_file():
        return None
    data = _read_yaml(folder / ".hydra" / "hydra.yaml") or {}
    return ((data.get("hydra") or {}).get("job") or {}).get("name")


def _resolved(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def _hydra_cwd(folder: Path) -> Optional[Path]:
    """The folder a Hydra job was started from (``hydra.runtime.cwd``), where its relative paths point."""
    hydra_dir = _hydra_dir(folder)
    if hydra_dir is None or not (hydra_dir / "hydra.yaml").is_file():
        return None
    data = _read_yaml(hydra_dir / "hydra.yaml")
    cwd = (((data or {}).get("hydra") or {}).get("runtime") or {}).get("cwd") if isinstance(data, dict) else None
    return Path(cwd) if isinstance(cwd, str) and cwd else None


def _linked_search(folder: Path, linked: Any) -> Optional[Path]:
    """The search run folder a retraining records (``search_run``): as written when it is absolute, else
    relative to where the retraining was started, to the current folder, or to a folder above the
    retraining (``genotype=outputs/quickstart/search`` of a run in ``outputs/quickstart/retrain``)."""
    if not isinstance(linked, str) or not linked:
        return None
    path = Path(linked)
    if path.is_absolute():
        candidates = [path]
    else:
        started = _hydra_cwd(folder)
        candidates = ([started / path] if started is not None else []) + [Path.cwd() / path]
        candidates += [parent / path for parent in _resolved(folder).parents]
    for candidate in candidates:
        if candidate.is_dir() and (candidate / RESULT).is_file():
            return candidate
    return None


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _kept(overrides: Iterable[str]) -> list[str]:
    return sorted(o for o in overrides if _key_of(o) not in IGNORED_KEYS and not _key_of(o).startswith("hydra"))


def _seed_of(result: Optional[dict], overrides: Optional[list[str]]) -> Optional[int]:
    if result:
        if isinstance(result.get("seed"), int):
            return result["seed"]
        seed = (result.get("config") or {}).get("seed")
        if isinstance(seed, int):
            return seed
    for o in overrides or []:
        if _key_of(o) == "seed":
            try:
                return int(o.split("=", 1)[1])
            except ValueError:
                return None
    return None


def _status(result: Optional[dict]) -> str:
    return "unfinished" if not result else str(result.get("status", "unfinished"))


def _is_run_folder(folder: Path) -> bool:
    return (folder / RESULT).is_file() or (folder / ".hydra").is_dir() or _is_pipeline_job(folder)


def _is_pipeline_job(folder: Path) -> bool:
    """A pipeline job folder (search/ and retrain/ stages in one job), even before it wrote result.json or
    when it ran without Hydra; not a folder that holds separate runs named search/ and retrain/ (the
    quickstart's), whose stages have their own .hydra/."""
    if (folder / "pipeline.log").is_file() or _job_name(folder) == "pipeline":
        return True
    if (_read_json(folder / RESULT) or {}).get("command") == "pipeline":
        return True
    stages = [folder / name for name in ("search", "retrain")]
    return (any((stage / RESULT).is_file() for stage in stages)
            and not any((stage / ".hydra").is_dir() for stage in stages))


def find_run_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Job folders under the given folders (the first folder on each path with result.json or .hydra/)."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file() and path.name == RESULT:
            path = path.parent
        if not path.is_dir():
            raise NasrunError(f"nasrun report: {str(path)!r} is not a folder")
        stack = [path]
        while stack:
            folder = stack.pop()
            if _is_run_folder(folder):
                if folder.name in ("search", "retrain") and _is_pipeline_job(folder.parent):
                    folder = folder.parent  # a pipeline stage named directly
                found.append(folder)
                continue
            stack.extend(sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                                reverse=True))
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return unique


def load_run(folder: Path) -> Run:
    folder = Path(folder)
    result = _read_json(folder / RESULT)
    overrides = _overrides(folder)
    job = _job_name(folder)
    is_pipeline = (result or {}).get("command") == "pipeline" or job == "pipeline" or _is_pipeline_job(folder)
    if is_pipeline:
        s_folder, r_folder = folder / "search", folder / "retrain"
        search, retrain = _read_json(s_folder / RESULT), _read_json(r_folder / RESULT)
        status = _status(result)
        if result is None:  # still running, or killed before it could write a record
            stages = [_status(search), _status(retrain)]
            status = "failed" if "failed" in stages else "unfinished"
        reason = (result or {}).get("reason") or (search or {}).get("reason") or (retrain or {}).get("reason")
        run = Run(folder, "pipeline", status, reason if status != "completed" else None,
                  _seed_of(search or result, overrides), [], search, s_folder, retrain, r_folder)
    else:
        command = (result or {}).get("command") or job
        if command not in ("search", "retrain"):
            command = "retrain" if ((result or {}).get("config") or {}).get("genotype") else "search"
        run = Run(folder, command, _status(result), (result or {}).get("reason"), _seed_of(result, overrides))
        if command == "search":
            run.search, run.search_folder = result, folder
        else:
            run.retrain, run.retrain_folder = result, folder
            linked = _linked_search(folder, (result or {}).get("search_run"))
            if linked is not None:
                run.search_folder = linked
                run.search = _read_json(run.search_folder / RESULT)
    run.overrides = _group_overrides(run, overrides)
    return run


def _group_overrides(run: Run, overrides: Optional[list[str]]) -> list[str]:
    if overrides is None:  # not run through Hydra: fall back on what the result records
        config = ((run.retrain or run.search) or {}).get("config") or {}
        method = (config.get("method") or {}).get("name")
        dataset = (config.get("dataset") or {}).get("name")
        return [f"{k}={v}" for k, v in (("method", method), ("dataset", dataset)) if v]
    kept = []
    for o in _kept(overrides):
        if _key_of(o) == "genotype" and run.kind == "retrain" and run.search_folder is not None:
            searched = _overrides(run.search_folder) or []
            kept.append("genotype=<search " + " ".join(_kept(searched)) + ">")
        else:
            kept.append(o)
    return kept


def collect(paths: Sequence[str | Path]) -> list[Group]:
    """Runs under ``paths`` grouped by kind and overrides other than the seed, in a stable order."""
    groups: dict[tuple, Group] = {}
    runs = [load_run(folder) for folder in find_run_folders(paths)]
    # a search that a retraining in this report retrained (the quickstart's search/ and retrain/, a
    # retraining of a sweep's search) is listed once: in the retraining's row, which shows its figures
    retrained = {_resolved(r.search_folder) for r in runs if r.kind == "retrain" and r.search_folder is not None}
    for run in runs:
        if run.kind == "search" and _resolved(run.folder) in retrained:
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


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:100] or "run"


def write_plots(groups: Sequence[Group], out_dir: Path, root: Path) -> list[Path]:
    """Curves of every group (one panel each, one line per seed), final alphas and cells of every run."""
    import numpy as np

    from nasrun.genotype.genotype import Genotype
    from nasrun.report.plot import plot_alphas, plot_curves, plot_genotype
    from nasrun.run.folder import read_jsonl

    written: list[Path] = []
    curves = []
    for g in groups:
        lines, seen = [], set()
        for r in g.runs:
            if r.search_folder is None or not (r.search_folder / "metrics.jsonl").is_file():
                continue
            if _resolved(r.search_folder) in seen:  # several retrainings of one search: one line
                continue
            seen.add(_resolved(r.search_folder))
            seed = (r.search or {}).get("seed", r.seed) if r.kind == "retrain" else r.seed
            lines.append((f"seed {seed}", read_jsonl(r.search_folder / "metrics.jsonl")))
        curves.append((g.label, lines))
    if any(lines for _, lines in curves):
        written.append(plot_curves(curves, out_dir / "curves.png", keys=curve_keys(curves)))
    drawn: set[Path] = set()
    for g in groups:
        for r in g.runs:
            try:
                name = _slug(str(r.folder.relative_to(root)))
            except ValueError:
                name = _slug(r.folder.name)
            searched = (r.search or {}).get("seed") if r.kind == "retrain" else None
            title = f"{g.label}  seed {r.seed}" if searched is None or searched == r.seed else \
                f"{g.label}  search seed {searched}, retrain seed {r.seed}"
            genotype = None
            if r.search_folder is not None and (r.search_folder / "genotype.json").is_file():
                genotype = Genotype.load(r.search_folder / "genotype.json")
            else:
                saved = (r.search or {}).get("genotype") or (r.retrain or {}).get("genotype")
                genotype = Genotype.from_dict(saved) if saved else None
            alphas = r.search_folder / "alphas.npz" if r.search_folder is not None else None
            if alphas is not None and alphas.is_file() and _resolved(alphas) not in drawn:
                drawn.add(_resolved(alphas))
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
        written += write_plots(groups, out / "plots", out)
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
