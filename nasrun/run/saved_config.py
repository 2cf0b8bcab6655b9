"""Before Hydra writes a run folder's ``.hydra/``: a folder that will be resumed must hold the config it was started with.

Hydra writes ``.hydra/config.yaml`` (and ``overrides.yaml``) from the command line at the start of every
run, resumed ones included, so a damaged or hand-edited file would be replaced without a word, and a
resume refused for a different command line would leave the refused config behind. :class:`SavedConfigCheck`
is a Hydra callback that reads the folder first. In a folder with something to resume (a checkpoint or a
completed result, its own or its pipeline stages'), the saved file must be the mapping Hydra wrote and equal
this command line's config: a different command line is refused as the resume itself would refuse it, an
edited file by its name. A pipe or a folder in the file's place is refused anywhere (Hydra would block on it
or fail). In a sweep, the job folders are not known before the sweeper runs: each job folder with something
to resume must hold a readable saved config.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from nasrun.errors import NasrunError, RunFolderError

#: Where a run folder, or a pipeline job's stage, keeps what a rerun resumes.
_STAGES = ("", "search", "retrain")


def _resumable(folder: Path) -> bool:
    """Whether a rerun in ``folder`` resumes something: a checkpoint, or a completed result to keep."""
    for stage in _STAGES:
        if (folder / stage / "checkpoint.pt").is_file():
            return True
        try:
            result = json.loads((folder / stage / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(result, dict) and result.get("status") == "completed":
            return True
    return False


def _plain(node: Any) -> Any:
    """A config as Hydra saves it (unresolved, through YAML), so both sides compare alike."""
    import yaml

    return yaml.safe_load(OmegaConf.to_yaml(node))


def saved_overrides(path: Path) -> list | None:
    """The overrides Hydra saved in ``path`` (``.hydra/overrides.yaml``); None when missing or unreadable."""
    import yaml

    try:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return overrides if isinstance(overrides, list) else None


def _refuse_special(path: Path) -> None:
    if os.path.lexists(path) and not path.is_file():
        raise RunFolderError(f"{path}: not a regular file (Hydra writes the run's config there); move it away")


def check_saved_config(folder: Path, subdir: str, current: Any, overrides: list[str]) -> None:
    """Refuse to start Hydra's job in ``folder`` when its saved config is damaged, edited, or another run's."""
    from nasrun.run.checkpoint import config_differences, different_config_message, shown_differences
    from nasrun.run.folder import read_saved_config

    path = folder / subdir / "config.yaml"
    _refuse_special(path)
    if not os.path.lexists(path) or not _resumable(folder):
        return
    saved = read_saved_config(folder, subdir)
    diffs = config_differences(saved, current)
    if not diffs:
        return
    before = saved_overrides(folder / subdir / "overrides.yaml")
    if before is None or sorted(map(str, before)) != sorted(overrides):
        raise RunFolderError(different_config_message(folder, diffs))
    raise RunFolderError(
        f"{path}: was edited after the run started ({shown_differences(diffs)}: the file's value -> the value of "
        "the same command line); restore it, or delete it (Hydra writes it again), and rerun the same command to "
        f"resume; or move {folder} away to start afresh"
    )


def _check_run(config: DictConfig) -> None:
    subdir = config.hydra.output_subdir
    if subdir is None:  # a torchrun rank other than 0: rank 0 writes and checks the folder
        return
    try:
        folder = Path(str(OmegaConf.select(config, "hydra.run.dir")))
    except Exception:  # noqa: BLE001 - a run dir Hydra itself cannot resolve is Hydra's to report
        return
    task = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    check_saved_config(folder, str(subdir), _plain(task), [str(o) for o in config.hydra.overrides.task])


def _check_sweep(config: DictConfig) -> None:
    from nasrun.run.folder import read_saved_config

    subdir = config.hydra.output_subdir
    try:
        sweep = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        jobs = sorted(p for p in sweep.iterdir() if p.is_dir()) if sweep.is_dir() else []
    except Exception:  # noqa: BLE001 - as above
        return
    if subdir is None:
        return
    for job in jobs:
        _refuse_special(job / str(subdir) / "config.yaml")
        if _resumable(job):
            read_saved_config(job, str(subdir))


def _one_line(command: str, check: Any, config: DictConfig) -> None:
    """Run a check; a problem is one line and exit status 2 (Hydra turns exceptions in callbacks into warnings)."""
    try:
        check(config)
    except NasrunError as exc:
        print(f"nasrun {command}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class SavedConfigCheck(Callback):
    """Hydra callback (``hydra.callbacks.saved_config`` of every command's config): see the module docstring."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _one_line(str(config.hydra.job.name), _check_run, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _one_line(str(config.hydra.job.name), _check_sweep, config)
