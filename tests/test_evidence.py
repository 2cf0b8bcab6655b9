"""The seeds' evidence inside a search: eigenvalue tracking that leaves the trajectory alone, benchmark lookups
per epoch, and the 12-benchmark protocol preset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_SEARCH
from nasrun.config import compose, to_typed
from nasrun.search import run_search


def _rows(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_tracking_the_eigenvalue_leaves_the_search_trajectory_unchanged(tmp_path):
    plain = to_typed(compose("search", [*TINY_SEARCH, "seed=1"]))
    tracked = to_typed(compose("search", [*TINY_SEARCH, "seed=1", "search.track_eigenvalue=true",
                                          "search.eigen_batches=2", "search.eigen_iters=5"]))
    run_search(plain, tmp_path / "plain")
    result = run_search(tracked, tmp_path / "tracked")
    a, b = np.load(tmp_path / "plain" / "alphas.npz"), np.load(tmp_path / "tracked" / "alphas.npz")
    assert np.array_equal(a["normal"], b["normal"]) and np.array_equal(a["reduce"], b["reduce"])
    rows = _rows(tmp_path / "tracked")
    values = [r["eigenvalue"] for r in rows]
    assert len(values) == 2 and all(np.isfinite(values)) and all(v != 0 for v in values)
    assert result["final"]["eigenvalue"] == values[-1]
    assert [r["val_acc"] for r in rows] == [r["val_acc"] for r in _rows(tmp_path / "plain")]
    assert "eigenvalue" not in _rows(tmp_path / "plain")[0]


@pytest.mark.parametrize("dataset,C,layers", [("cifar10", 36, 20), ("cifar100", 16, 8), ("svhn", 16, 8)])
def test_the_rdarts_preset_sizes_the_retraining_by_dataset(dataset, C, layers):
    cfg = to_typed(compose("pipeline", ["experiment=rdarts", "space=rdarts_s3", f"dataset={dataset}",
                                        "method=sdarts_adv", "seed=1"]))
    assert (cfg.recipe.C, cfg.recipe.layers, cfg.recipe.batch_size, cfg.recipe.auxiliary) == (C, layers, 96, True)
    assert (cfg.search.epochs, cfg.space.name, cfg.method.name) == (50, "rdarts_s3", "sdarts_adv")
