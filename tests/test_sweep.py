"""Sweeps end to end at tiny size: a seed x eta pipeline sweep and its report, unique sweep folders,
resuming a pipeline, a failing job under the joblib launcher, and the submitit_local launcher."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

NASRUN = [sys.executable, "-c", "from nasrun.cli.dispatch import main; main()"]
OPS = "space.ops=[none,max_pool_3x3,skip_connect,sep_conv_3x3]"
TINY_NET = ["search.epochs=1", "supernet.C=2", "supernet.layers=3", "space.nodes=2", OPS, "progress=false"]
DIGITS = ["dataset=digits", "search.batch_size=64", *TINY_NET]
# a few synthetic images: two steps per search epoch (launcher tests)
SYNTH = ["dataset=synthetic", "dataset.num_train=64", "dataset.num_test=32", "search.batch_size=16", *TINY_NET]
RETRAIN = ["recipe=quick", "recipe.epochs=1", "recipe.C=4", "recipe.layers=3"]


def nasrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # one thread per process: tiny jobs only lose time to thread hand-offs, worse on a busy machine
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([*NASRUN, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def results(folder: Path) -> dict[str, dict]:
    return {p.parent.relative_to(folder).as_posix(): json.loads(p.read_text()) for p in folder.rglob("result.json")}


@pytest.fixture(scope="module")
def pipeline_sweep(tmp_path_factory) -> Path:
    """2 seeds x 2 etas of Amended-DARTS, each job a search and a retraining."""
    base = tmp_path_factory.mktemp("sweep")
    sweep = base / "sweep"
    proc = nasrun("pipeline", "-m", *DIGITS, *RETRAIN, "method=amended", "seed=0,1", "estimator.eta=0.0,0.5",
                  f"hydra.sweep.dir={sweep}", cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"sweep folder: {sweep}" in proc.stdout
    return sweep


def test_pipeline_sweep_writes_one_folder_per_job(pipeline_sweep: Path):
    jobs = sorted(p.name for p in pipeline_sweep.iterdir() if p.is_dir())
    # named by the swept values only; the shared overrides are in multirun.yaml
    assert jobs == ["0_eta-0.0_seed-0", "1_eta-0.5_seed-0", "2_eta-0.0_seed-1", "3_eta-0.5_seed-1"]
    for job in jobs:
        folder = pipeline_sweep / job
        assert json.loads((folder / "result.json").read_text())["status"] == "completed"
        search = json.loads((folder / "search" / "result.json").read_text())
        retrain = json.loads((folder / "retrain" / "result.json").read_text())
        assert search["status"] == retrain["status"] == "completed"
        assert search["config"]["estimator"]["eta"] == float(job.split("_")[1][4:])
        assert retrain["search_run"] == str(folder / "search") and retrain["dataset"] == "digits"
        assert search["seed"] == retrain["seed"] == int(job[-1])
        assert (folder / "pipeline.log").exists() and (folder / "search" / "search.log").exists()
        # each stage logs into its own folder (and both into pipeline.log)
        assert "nasrun.train.retrain" not in (folder / "search" / "search.log").read_text()
        assert "nasrun.train.retrain" in (folder / "pipeline.log").read_text()


def test_report_on_the_sweep(pipeline_sweep: Path):
    proc = nasrun("report", str(pipeline_sweep), "--plot", cwd=pipeline_sweep)
    assert proc.returncode == 0, proc.stderr
    assert "estimator.eta=0.0" in proc.stdout and "estimator.eta=0.5" in proc.stdout
    rows = {r["group"]: r for r in csv.DictReader((pipeline_sweep / "summary.csv").open())}
    assert sorted(rows) == ["estimator.eta=0.0", "estimator.eta=0.5"]
    by_eta: dict[str, list] = {"0.0": [], "0.5": []}
    for job in sorted(p for p in pipeline_sweep.iterdir() if p.is_dir() and p.name[0].isdigit()):
        search = json.loads((job / "search" / "result.json").read_text())
        retrain = json.loads((job / "retrain" / "result.json").read_text())
        by_eta[job.name.split("_")[1][4:]].append((search, retrain))
    for eta, runs in by_eta.items():
        row = rows[f"estimator.eta={eta}"]
        assert (row["runs"], row["completed"], row["failed"]) == ("2", "2", "0")
        for column, values in {
            "search_val_acc_pct": [100 * s["final"]["val_acc"] for s, _ in runs],
            "test_acc_pct": [100 * r["test_acc"] for _, r in runs],
            "test_error_pct": [100 * r["test_error"] for _, r in runs],
            "skip_normal": [s["final"]["skip_normal"] for s, _ in runs],
            "params_m": [r["params"] / 1e6 for _, r in runs],
            "retrain_hours": [r["wall_seconds"] / 3600 for _, r in runs],
        }.items():
            assert float(row[f"{column}_mean"]) == pytest.approx(statistics.fmean(values)), column
            assert float(row[f"{column}_std"]) == pytest.approx(statistics.stdev(values), abs=1e-12), column
    md = (pipeline_sweep / "summary.md").read_text()
    assert "| estimator.eta=0.0 | 2 | 2 | 0 |" in md
    plots = pipeline_sweep / "plots"
    assert (plots / "curves.png").exists()
    assert len(list((plots / "alphas").glob("*.png"))) == 4 and len(list((plots / "cells").glob("*.png"))) == 4


def test_sweep_folders_are_unique_within_a_second():
    from hydra import compose, initialize_config_module
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    from nasrun.config.compose import register

    register()  # nasrun's resolvers (and schemas)
    setup_globals()  # Hydra's ${now:} resolver
    dirs = []
    for _ in range(3):
        with initialize_config_module(version_base="1.3", config_module="nasrun.conf"):
            cfg = compose("search", return_hydra_config=True)
        dirs.append(OmegaConf.select(cfg, "hydra.sweep.dir"))
    assert len(set(dirs)) == 3, dirs
    assert all(d.startswith("multirun/search/") for d in dirs)


def test_rerun_pipeline_skips_the_search_and_resumes_the_retraining(tmp_path: Path):
    from nasrun.config.compose import compose, to_typed
    from nasrun.run.pipeline import run_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = to_typed(compose("pipeline", [*SYNTH, "recipe=quick", "recipe.epochs=2", "recipe.C=4",
                                            "recipe.layers=3", "device=cpu", "seed=1"]))
        job = tmp_path / "job"

        def stop(epoch, row):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_pipeline(cfg, job, on_retrain_epoch=stop)
        assert json.loads((job / "result.json").read_text())["status"] == "interrupted"
        assert json.loads((job / "retrain" / "result.json").read_text())["status"] == "interrupted"
        search_ckpt = (job / "search" / "checkpoint.pt").stat().st_mtime_ns
        seen = []
        result = run_pipeline(cfg, job, on_search_epoch=lambda e, r: seen.append(("search", e)),
                              on_retrain_epoch=lambda e, r: seen.append(("retrain", e)))
    finally:
        torch.set_num_threads(threads)
    assert result["status"] == "completed" and result["test_acc"] is not None
    assert seen == [("retrain", 1)]  # the search was complete; the retraining went on from epoch 2
    assert (job / "search" / "checkpoint.pt").stat().st_mtime_ns == search_ckpt
    rows = [json.loads(line) for line in (job / "retrain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]


def test_joblib_sweep_with_a_failing_job(tmp_path: Path):
    """Two jobs in parallel worker processes; one diverges (NaN loss): it is recorded as failed, the other
    completes, and the command exits 1 naming the failed job."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    proc = nasrun("search", "-m", *SYNTH, "search.lr=0.025,1e30", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    found = results(sweep)
    assert sorted(found) == ["0_search.lr-0.025", "1_search.lr-1e+30"]
    assert found["0_search.lr-0.025"]["status"] == "completed"
    assert (sweep / "0_search.lr-0.025" / "genotype.json").exists()
    failed = found["1_search.lr-1e+30"]
    assert failed["status"] == "failed" and "NonFiniteLoss" in failed["reason"]
    assert "1 of 2 jobs did not complete" in proc.stderr and str(sweep / "1_search.lr-1e+30") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_submitit_local_runs_a_two_job_sweep(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = nasrun("search", "-m", *SYNTH, "seed=0,1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = results(sweep)
    assert sorted(found) == ["0_seed-0", "1_seed-1"]
    assert [found[k]["status"] for k in sorted(found)] == ["completed", "completed"]
    assert [found[k]["seed"] for k in sorted(found)] == [0, 1]
    assert (sweep / ".submitit").is_dir() and all((sweep / k / "search.log").exists() for k in found)
