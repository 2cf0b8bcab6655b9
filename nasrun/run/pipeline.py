"""Jobs that span stages, and what a sweep needs to finish: the pipeline, failure records, the outcome.

``run_pipeline`` searches a genotype and retrains it in one job folder::

    <job folder>/
      .hydra/            written by Hydra (the pipeline's overrides)
      pipeline.log       both stages' log
      result.json        the job's status; the stages' figures are in their own folders
      search/            a search run folder (see docs/run-folder.md)
      retrain/           a retrain run folder; its genotype is search/genotype.json

Both stages resume like standalone runs: a completed search is not redone, a half-done retraining
continues from its checkpoint. One ``seed`` drives both stages.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Optional

from nasrun.config.schema import NasrunConf
from nasrun.config.compose import as_plain_dict
from nasrun.errors import ConfigError
from nasrun.run.lifecycle import reason_of
from nasrun.run.signals import Interrupted
from nasrun.run.folder import write_result

log = logging.getLogger(__name__)

SEARCH_DIR = "search"
RETRAIN_DIR = "retrain"


class StageFailed(RuntimeError):
    """A pipeline stage ended without completing (its own result.json says why)."""


@contextmanager
def _own_file_logs() -> Iterator[None]:
    """Remove the file handlers a stage adds to the root logger, so the next stage does not write into them."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in before and isinstance(handler, logging.FileHandler):
                root.removeHandler(handler)
                handler.close()


def check_pipeline(cfg: NasrunConf) -> None:
    """What a pipeline cannot take: a genotype (it retrains the one its search finds)."""
    if cfg.genotype:
        raise ConfigError(f"genotype={cfg.genotype!r} is not allowed: a pipeline retrains the genotype its own "
                          "search finds (use nasrun retrain for a given genotype)")


def run_pipeline(cfg: NasrunConf, out_dir: str | Path, on_search_epoch: Optional[Any] = None,
                 on_retrain_epoch: Optional[Any] = None) -> dict:
    """Search into ``out_dir/search``, then retrain its genotype into ``out_dir/retrain``."""
    from nasrun.train.retrain import run_retrain
    from nasrun.search.loop import run_search

    check_pipeline(cfg)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    search_dir, retrain_dir = out / SEARCH_DIR, out / RETRAIN_DIR
    config = as_plain_dict(cfg)
    started = time.time()
    stage = "search"
    try:
        with _own_file_logs():
            searched = run_search(replace(cfg, genotype=None), search_dir, on_search_epoch)
        if searched.get("status") != "completed":
            raise StageFailed(f"search ended with status {searched.get('status')}: {searched.get('reason')}")
        stage = "retrain"
        with _own_file_logs():
            retrained = run_retrain(replace(cfg, genotype=str(search_dir)), retrain_dir, on_retrain_epoch)
        if retrained.get("status") != "completed":
            raise StageFailed(f"retrain ended with status {retrained.get('status')}: {retrained.get('reason')}")
    except (KeyboardInterrupt, Interrupted):
        write_result(out, "interrupted", command="pipeline", stage=stage,
                     reason=f"interrupted during the {stage} stage; rerun the same command to resume",
                     config=config)
        raise
    except Exception as exc:
        write_result(out, "failed", command="pipeline", stage=stage, reason=f"{stage}: {exc if isinstance(exc, StageFailed) else reason_of(exc)}",
                     config=config, wall_seconds=time.time() - started)
        raise
    final = searched.get("final") or {}
    return write_result(
        out,
        "completed",
        command="pipeline",
        search_run=SEARCH_DIR,
        retrain_run=RETRAIN_DIR,
        seed=cfg.seed,
        search_val_acc=final.get("val_acc"),
        test_acc=retrained.get("test_acc"),
        test_error=retrained.get("test_error"),
        params=retrained.get("params"),
        search_seconds=searched.get("wall_seconds"),
        retrain_seconds=retrained.get("wall_seconds"),
        config=config,
    )


