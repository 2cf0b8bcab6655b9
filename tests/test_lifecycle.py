"""One run lifecycle for search and retrain: exact resume of a retraining, SIGTERM, and failures in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_RETRAIN, TINY_SEARCH
from nasrun.config.compose import compose, to_typed
from nasrun.train.retrain import run_retrain
from nasrun.run.signals import Interrupted

RETRAIN = ["genotype=DARTS_V2", "dataset=digits", *TINY_RETRAIN, "recipe.epochs=3", "recipe.drop_path_prob=0.3",
           "recipe.auxiliary=true", "recipe.layers=3", "seed=4"]
TIMING = {"seconds", "images_per_s"}


def _rows(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.smoke
def test_a_resumed_retraining_equals_an_uninterrupted_one(tmp_path):
    cfg = to_typed(compose("retrain", RETRAIN))
    whole = run_retrain(cfg, tmp_path / "whole")

    def stop_after_first(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise Interrupted(signal.SIGTERM)

    with pytest.raises(Interrupted):
        run_retrain(cfg, tmp_path / "cut", stop_after_first)
    record = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert (record["status"], record["last_epoch"], record["signal"]) == ("interrupted", 0, "SIGTERM")
    resumed = run_retrain(cfg, tmp_path / "cut")
    assert resumed["test_acc"] == whole["test_acc"]
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "whole")
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _nasrun(*args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen([sys.executable, "-m", "nasrun", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_sigterm_records_interrupted_keeps_the_checkpoint_and_prints_one_line(tmp_path):
    run = tmp_path / "run"
    args = ["search", *TINY_SEARCH, "search.epochs=40", f"hydra.run.dir={run}"]
    proc = _nasrun(*args, cwd=tmp_path)
    deadline = time.time() + 240
    while not (run / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (run / "checkpoint.pt").exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "interrupted" and result["signal"] == "SIGTERM"
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert result["last_epoch"] == saved["epoch"] >= 0
    assert not list(run.glob(".*.tmp"))


def test_a_failed_run_prints_one_line_and_exits_1(tmp_path):
    run = tmp_path / "run"
    proc = _nasrun("search", *TINY_SEARCH, "search.lr=1e30", "search.lr_min=0", f"hydra.run.dir={run}",
                   cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "NonFiniteLoss" in lines[0] and "result.json" in lines[0], err
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "failed" and "NonFiniteLoss" in result["reason"]


def test_a_supernet_that_cannot_fit_is_refused_before_it_is_allocated(tmp_path):
    from nasrun.errors import ConfigError
    from nasrun.search.loop import run_search

    cfg = to_typed(compose("search", [*TINY_SEARCH, "supernet.C=4096", "supernet.layers=40", "space.nodes=4",
                                      "space.ops=[none,skip_connect,sep_conv_5x5]"]))
    with pytest.raises(ConfigError, match=r"parameters: training them needs at least [\d.]+ GiB"):
        run_search(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "failed"
