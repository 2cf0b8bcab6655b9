"""Multi-process retraining under torchrun (CPU, gloo, 2 processes): the same training as one process.

The end-to-end tests start the real entry point, ``python -m torch.distributed.run --standalone
--nproc_per_node=2 -m nasrun retrain ...``, on the tiny digits network of conftest's TINY_RETRAIN, and
compare with one process running the same config.

What must be equal: with ``recipe.sync_bn=true`` every step normalises with the global batch's
statistics, so a 2-process step is the 1-process step up to float rounding (a sum over ranks instead of
over one batch). Per-rank BN (the default) normalises each half with its own statistics: a different,
equally valid training, not compared here. ``recipe.lr=0.01``: at the quick recipe's lr 0.05 this 8x8
network is chaotic, a 1e-7 relative perturbation of the initial weights changes them by up to 90% after
two epochs in one process, so no run can be compared to another bit for bit; at 0.01 that perturbation
stays at 2e-6. Tolerances: every weight tensor within 1e-4 of its largest magnitude (measured: 3e-6), the
losses within 1e-5 relative (measured: 3e-7), the accuracies exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_RETRAIN
from nasrun.config.compose import compose, to_typed
from nasrun.data.datasets import ImageSet
from nasrun.data.loaders import make_shard_stream, make_stream
from nasrun.data.streams import check_shardable, shard_bounds
from nasrun.parallel.distributed import FAIL_HOOK, PIPELINE_REFUSED
from nasrun.errors import DataError
from nasrun.train.retrain import run_retrain

DDP_RETRAIN = ["genotype=DARTS_V2", "dataset=digits", *TINY_RETRAIN, "recipe.epochs=2", "recipe.lr=0.01",
               "recipe.sync_bn=true", "threads=1", "device=cpu"]
WEIGHTS_TOL = 1e-4  # of each tensor's largest magnitude
LOSS_RTOL = 1e-5


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HYDRA_FULL_ERROR", "RANK", "WORLD_SIZE", "LOCAL_RANK", FAIL_HOOK)}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def torchrun(*args: str, cwd: Path, no_python: bool = False, **env: str) -> subprocess.CompletedProcess:
    """Two processes on this machine; ``no_python``: the ``nasrun`` script (torchrun --no-python), else -m nasrun."""
    entry = ["--no-python", "nasrun"] if no_python else ["-m", "nasrun"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *entry, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env(**env), timeout=300)


def nasrun_as_rank(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """One process that believes it is rank 0 of 2 (what it checks before it joins the job)."""
    cmd = [sys.executable, "-m", "nasrun", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=_env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0"))


def weights(run: Path) -> dict:
    return torch.load(run / "model.pt", weights_only=True)["model"]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        scale = max(float(a[key].abs().max()), 1e-6) if a[key].is_floating_point() else 1.0
        assert float((a[key].double() - b[key].double()).abs().max()) <= WEIGHTS_TOL * scale, key


def assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for x, y in zip(a, b):
        assert x["lr"] == y["lr"]
        for key in ("train_acc", "test_acc", "test_acc_top5"):
            assert x[key] == y[key], key
        for key in ("train_loss", "test_loss"):
            assert x[key] == pytest.approx(y[key], rel=LOSS_RTOL), key


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddp") / "one"
    run_retrain(to_typed(compose("retrain", DDP_RETRAIN)), run)
    return run


# ------------------------------------------------------------------------------------ data sharding


def test_shard_bounds_split_a_batch_in_rank_order():
    assert [shard_bounds(10, r, 2) for r in range(2)] == [(0, 5), (5, 10)]
    assert [shard_bounds(7, r, 3) for r in range(3)] == [(0, 2), (2, 4), (4, 7)]
    with pytest.raises(ValueError):
        shard_bounds(8, 2, 2)


@pytest.mark.parametrize("loader", ["device", "torch"])
def test_sharded_streams_are_the_one_process_stream(loader):
    """Rank slices put back together are the one-process batches, and every rank's state is the one-process state."""
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (50, 3, 8, 8), generator=g, dtype=torch.uint8),
                    torch.randint(0, 5, (50,), generator=g))
    kw = dict(augment=("crop", "flip"), crop_padding=2, cutout=3, drop_last=False, loader=loader, workers=0)
    one = make_stream(data, None, 16, 7, [0.5] * 3, [0.25] * 3, **kw)
    ranks = [make_shard_stream(r, 2, data, None, 16, 7, [0.5] * 3, [0.25] * 3, **kw) for r in range(2)]
    for _ in range(9):  # more than two passes of 3 full batches and a short one (2 images: 1 per rank)
        x, y = next(one)
        parts = [next(s) for s in ranks]
        assert [s.global_batch for s in ranks] == [len(y)] * 2
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        for s in ranks:
            assert _same_state(s.state_dict(), one.state_dict())
    resumed = make_shard_stream(1, 2, data, None, 16, 7, [0.5] * 3, [0.25] * 3, **kw)
    resumed.load_state_dict(one.state_dict())  # a one-process checkpoint resumes a rank, and the other way round
    x, _ = next(one)
    assert torch.equal(next(resumed)[0], x[8:])


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def test_a_short_last_batch_must_leave_every_rank_an_image():
    check_shardable(1438, 64, 2, drop_last=False)  # 30 images left: 15 each
    with pytest.raises(DataError, match="fewer than the 2 processes"):
        check_shardable(1409, 64, 2, drop_last=False)  # 1 image left
    check_shardable(1409, 64, 2, drop_last=True)


# --------------------------------------------------------------------------------- what the CLI checks


def test_pipeline_under_torchrun_is_refused(tmp_path: Path):
    proc = nasrun_as_rank("pipeline", "experiment=quickstart", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"nasrun pipeline: error: {PIPELINE_REFUSED}"]
    assert not any(tmp_path.iterdir())


def test_the_global_batch_must_split_evenly(tmp_path: Path):
    proc = nasrun_as_rank("retrain", *DDP_RETRAIN, "recipe.batch_size=33", cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "recipe.batch_size=33" in proc.stderr and "multiple of 2" in proc.stderr


def test_sweeps_under_torchrun_are_refused(tmp_path: Path):
    proc = nasrun_as_rank("retrain", "-m", *DDP_RETRAIN, "seed=0,1", cwd=tmp_path)
    assert proc.returncode == 2 and "torchrun" in proc.stderr


# ------------------------------------------------------------------------------------ two processes


def test_two_processes_train_as_one(one_process: Path, tmp_path: Path):
    run = tmp_path / "two"
    proc = torchrun("retrain", *DDP_RETRAIN, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("retrain run folder:") == 1  # rank 0 alone prints the outcome
    assert_same_weights(weights(one_process), weights(run))
    assert_same_metrics(metrics(one_process), metrics(run))
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and result["world_size"] == 2
    assert result["test_acc"] == json.loads((one_process / "result.json").read_text())["test_acc"]
    assert result["config"]["recipe"]["sync_bn"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["two"]  # rank 1 made no run folder of its own
    assert "epoch 2/2" in (run / "retrain.log").read_text()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2


def test_a_failing_rank_ends_the_job_and_a_single_process_resumes_it(one_process: Path, tmp_path: Path):
    """Rank 1 raises in epoch 2 while rank 0 waits in an all-reduce: recorded, every rank ends at once. Then one
    process resumes the 2-process checkpoint of epoch 1 and finishes as the uninterrupted one-process run."""
    run = tmp_path / "failing"
    started = time.time()
    proc = torchrun("retrain", *DDP_RETRAIN, f"hydra.run.dir={run}", cwd=tmp_path,
                    no_python=shutil.which("nasrun") is not None, **{FAIL_HOOK: "1:1"})
    ended = time.time()
    assert proc.returncode != 0
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "failed" and result["failed_rank"] == 1 and result["world_size"] == 2
    assert result["reason"].startswith("rank 1: RuntimeError: NASRUN_TEST_FAIL_RANK")
    assert result["last_epoch"] == 0
    assert ended - (run / "result.json").stat().st_mtime < 10  # no rank waited for a timeout
    assert ended - started < 150
    assert "rank 1 failed: RuntimeError: NASRUN_TEST_FAIL_RANK" in proc.stderr
    assert "rank 0 stopped: rank 1 failed" in proc.stderr

    resumed = run_retrain(to_typed(compose("retrain", DDP_RETRAIN)), run)
    assert resumed["status"] == "completed" and resumed["world_size"] == 1
    assert "resuming" in (run / "retrain.log").read_text()
    assert_same_weights(weights(one_process), weights(run))
    assert_same_metrics(metrics(one_process), metrics(run))
