"""Reading run folders for ``nasrun report``: which folders are runs, and what each one's stages produced.

A *run* is a job folder: a search run, a retrain run or a pipeline job (search and retrain in one
folder). Each is read from its ``result.json`` (missing while it runs or after it was killed) and the
overrides Hydra recorded for it (``.hydra/overrides.yaml``), leaving out the seed and keys that do not
change the experiment (device, progress, data root). A retraining is linked to the search run folder it
retrained (``search_run`` in its result).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from nasrun.errors import NasrunError

RESULT = "result.json"
# override keys that never separate groups
IGNORED_KEYS = ("seed", "progress", "device", "dataset.root", "dataset.download")

# What a run yields, as the report's columns: (key, table heading, unit scale, format); "duration": hours
# shown in s, min or h, one unit per column
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


def resolved_path(path: Path) -> Path:
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
        candidates += [parent / path for parent in resolved_path(folder).parents]
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

