"""The search loop called from Python (compose API): resume equivalence and the run-folder contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SYNTH
from nasrun.config.compose import compose, to_typed
from nasrun.errors import RunFolderError
from nasrun.search.loop import run_search


class Stop(Exception):
    pass


def _cfg(*extra: str):
    return to_typed(compose("search", [*TINY_SYNTH, "search.epochs=3", *extra]))


@pytest.mark.smoke
def test_interrupted_search_resumes_to_the_same_result(tmp_path: Path):
    cfg = _cfg("seed=5")
    straight = run_search(cfg, tmp_path / "straight")

    def stop_after_first(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        run_search(cfg, tmp_path / "resumed", on_epoch_end=stop_after_first)
    assert json.loads((tmp_path / "resumed" / "result.json").read_text())["status"] == "failed"
    resumed = run_search(cfg, tmp_path / "resumed")

    assert resumed["status"] == "completed"
    assert resumed["genotype"] == straight["genotype"]
    a, b = np.load(tmp_path / "straight" / "alphas.npz"), np.load(tmp_path / "resumed" / "alphas.npz")
    np.testing.assert_array_equal(a["normal"], b["normal"])
    np.testing.assert_array_equal(a["reduce"], b["reduce"])
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    straight_rows = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in straight_rows]


def test_run_folder_with_other_config_is_refused(tmp_path: Path):
    run_search(_cfg("search.epochs=1"), tmp_path / "run")
    with pytest.raises(RunFolderError, match="search.epochs"):
        run_search(_cfg("search.epochs=2"), tmp_path / "run")


def test_second_order_search_runs(tmp_path: Path):
    result = run_search(_cfg("method=darts_2nd", "search.epochs=1"), tmp_path / "run")
    assert result["status"] == "completed" and result["method"] == "darts_2nd"


def test_arch_warmup_freezes_alphas(tmp_path: Path):
    run_search(_cfg("search.epochs=2", "search.arch_warmup_epochs=2"), tmp_path / "run")
    alphas = np.load(tmp_path / "run" / "alphas.npz")["normal"]
    np.testing.assert_array_equal(alphas[0], alphas[1])


def test_default_config_is_the_darts_paper_setup():
    cfg = to_typed(compose("search", []))
    assert (cfg.dataset.name, cfg.supernet.C, cfg.supernet.layers, cfg.search.epochs) == ("cifar10", 16, 8, 50)
    assert (cfg.search.batch_size, cfg.search.lr, cfg.search.arch_lr, cfg.search.weight_decay) == (64, 0.025, 3e-4, 3e-4)
    assert len(cfg.space.ops) == 8
    retrain = to_typed(compose("retrain", ["genotype=DARTS_V2"]))
    r = retrain.recipe
    assert (r.epochs, r.C, r.layers, r.batch_size, r.auxiliary_weight, r.drop_path_prob, r.cutout) == (
        600, 36, 20, 96, 0.4, 0.2, 16)
