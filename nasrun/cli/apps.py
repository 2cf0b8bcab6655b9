"""The Hydra applications of ``nasrun search|retrain|pipeline``: one job each, its outcome printed.

Hydra calls an application once per job (once, or once per member of a ``-m`` sweep). A job that fails
is recorded in its result.json and printed in one line; in a sweep the other jobs go on and the
dispatcher lists the failed ones at the end.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from nasrun.config.compose import to_typed
from nasrun.errors import NasrunError
from nasrun.parallel import ranks


def full_error() -> bool:
    """``HYDRA_FULL_ERROR=1``: show tracebacks instead of one line."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _run_task(cfg: DictConfig, command: str) -> dict:
    """One job: run it and print its outcome; a failure is recorded in the job's result.json."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from nasrun.parallel.launch import join_job
    from nasrun.run.signals import Interrupted, exit_status, hold, record_interrupted, signal_of

    hydra_cfg = HydraConfig.get()
    out_dir = hydra_cfg.runtime.output_dir
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    join_job(out_dir)
    try:
        return _run_command(to_typed(cfg), command, out_dir)
    except (Interrupted, KeyboardInterrupt) as exc:
        hold()  # a second signal must not cut the record or the line short
        signum = signal_of(exc)
        if ranks.rank() == 0:
            record_interrupted(out_dir, command, signum)  # stopped before the run recorded itself
        print(f"nasrun {command}: interrupted by {signal.Signals(signum).name}; {out_dir} keeps what was done "
              "(result.json says so): rerun the same command to resume", file=sys.stderr)
        raise SystemExit(exit_status(signum)) from None
    except Exception as exc:
        if full_error():
            raise
        return job_failed(cfg, command, out_dir, exc, in_sweep)


def job_failed(cfg: DictConfig, command: str, out_dir: str, exc: Exception, in_sweep: bool) -> dict:
    """Record a failed job and say so in one line; exit unless other jobs of a sweep go on."""
    if ranks.rank() != 0:
        from nasrun.parallel.launch import rank_failed

        return rank_failed(command, exc, in_sweep)
    from nasrun.run.sweeps import record_failure

    result = record_failure(out_dir, command, exc, _plain(cfg))
    logging.getLogger("nasrun.cli").error("job failed: %s (%s)", result.get("reason"), out_dir)
    status = 2 if isinstance(exc, NasrunError) else 1
    where = f"  (recorded in {Path(out_dir) / 'result.json'})" if status == 1 else ""
    print(f"nasrun {command}: {'job ' if in_sweep else ''}failed: {result.get('reason')}{where}", file=sys.stderr)
    if in_sweep:
        return result
    raise SystemExit(status) from None


def _plain(cfg: DictConfig) -> dict | None:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - the record is still written, without the config
        return None


def _run_command(typed, command: str, out_dir: str) -> dict:
    if command == "search":
        from nasrun.search.loop import run_search

        result = run_search(typed, out_dir)
        if ranks.rank() == 0:
            print_search(out_dir, result)
    elif command == "pipeline":
        from nasrun.run.pipeline import run_pipeline

        result = run_pipeline(typed, out_dir)
        print(f"pipeline job folder: {out_dir}")
        print(f"search-val accuracy {_fmt(result.get('search_val_acc'))}, test accuracy "
              f"{_fmt(result.get('test_acc'))}  ({(result.get('params') or 0) / 1e6:.2f}M params)")
    else:
        from nasrun.train.retrain import run_retrain

        result = run_retrain(typed, out_dir)
        if ranks.rank() == 0:
            print(f"retrain run folder: {out_dir}")
            print(f"test accuracy: {_fmt(result.get('test_acc'))}  ({result.get('params', 0) / 1e6:.2f}M params, "
                  f"{result.get('macs', 0) / 1e6:.1f}M multiply-adds)")
    return result


def print_search(out_dir: str, result: dict) -> dict:
    """The lines a completed search prints: its folder, its genotype file and its search-val accuracy."""
    print(f"search run folder: {out_dir}")
    print(f"genotype: {Path(out_dir) / 'genotype.json'}  (search-val accuracy "
          f"{_fmt(result.get('final', {}).get('val_acc'))})")
    return result


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@hydra.main(version_base="1.3", config_path="pkg://nasrun.conf", config_name="search")
def search_app(cfg: DictConfig) -> dict:
    return _run_task(cfg, "search")


@hydra.main(version_base="1.3", config_path="pkg://nasrun.conf", config_name="retrain")
def retrain_app(cfg: DictConfig) -> dict:
    return _run_task(cfg, "retrain")


@hydra.main(version_base="1.3", config_path="pkg://nasrun.conf", config_name="pipeline")
def pipeline_app(cfg: DictConfig) -> dict:
    return _run_task(cfg, "pipeline")


APPS = {"search": search_app, "retrain": retrain_app, "pipeline": pipeline_app}
