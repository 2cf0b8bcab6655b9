"""The seeds' evidence inside a search: eigenvalue tracking that leaves the trajectory alone, benchmark lookups
per epoch, and the 12-benchmark protocol preset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_SEARCH
from nasrun.config.compose import compose, to_typed
from nasrun.search.loop import run_search


def _rows(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.smoke
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


def _accuracy(arch: str, metric: int) -> float:
    """A made-up accuracy every test can recompute from the arch string."""
    import zlib

    return round(10 + (zlib.crc32(f"{arch}/{metric}".encode()) % 8000) / 100, 2)


@pytest.fixture(scope="module")
def nb201_table(tmp_path_factory):
    """Every NB201 cell with two made-up metrics, as the CSV users export once from the official file."""
    from itertools import product

    ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    path = tmp_path_factory.mktemp("bench") / "nb201.csv"
    lines = ["arch,cifar10_test,cifar100_test"]
    for e in product(ops, repeat=6):
        arch = f"|{e[0]}~0|+|{e[1]}~0|{e[2]}~1|+|{e[3]}~0|{e[4]}~1|{e[5]}~2|"
        lines.append(f"{arch},{_accuracy(arch, 0)},{_accuracy(arch, 1)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_benchmark_lookups_go_into_every_metrics_row_and_the_result(tmp_path, nb201_table):
    cfg = to_typed(compose("search", ["space=nb201", "dataset=digits", "dataset.subset=16", "search.epochs=2",
                                      "search.batch_size=32", "supernet.C=4", "supernet.layers=1", "progress=false",
                                      "benchmark=nb201", f"benchmark.path={nb201_table}"]))
    result = run_search(cfg, tmp_path / "run")
    genotypes = [json.loads(line)["genotype"]["nb201"]
                 for line in (tmp_path / "run" / "genotypes.jsonl").read_text().splitlines()]
    rows = _rows(tmp_path / "run")
    for row, arch in zip(rows, genotypes):
        assert (row["bench_cifar10_test"], row["bench_cifar100_test"]) == (_accuracy(arch, 0), _accuracy(arch, 1))
    assert result["final"]["bench_cifar10_test"] == _accuracy(result["genotype"]["nb201"], 0)


def test_the_report_shows_the_evidence_columns_and_curves(tmp_path, nb201_table):
    from nasrun.report.run_plots import curve_keys
    from nasrun.report.summary import collect, columns, table_rows

    for seed in (0, 1):
        cfg = to_typed(compose("search", ["space=nb201", "dataset=digits", "dataset.subset=16", "search.epochs=1",
                                          "search.batch_size=32", "supernet.C=4", "supernet.layers=1",
                                          "progress=false", f"seed={seed}", "search.track_eigenvalue=true",
                                          "search.eigen_batches=1", "search.eigen_iters=3", "benchmark=nb201",
                                          f"benchmark.path={nb201_table}"]))
        run_search(cfg, tmp_path / f"s{seed}")
    groups = collect([tmp_path])
    keys = [k for k, *_ in columns(groups)]
    assert "eigenvalue" in keys and "bench_cifar10_test" in keys and "bench_cifar100_test" in keys
    values = [json.loads((tmp_path / f"s{s}" / "result.json").read_text())["final"]["bench_cifar10_test"]
              for s in (0, 1)]
    n, mean, std = groups[0].stats("bench_cifar10_test")
    assert n == 2 and mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    cell = table_rows(groups)[0][4 + keys.index("bench_cifar10_test")]
    assert cell.startswith(f"{np.mean(values):.2f}")
    lines = [("seed 0", _rows(tmp_path / "s0"))]
    assert ("eigenvalue", "Hessian eigenvalue (alphas)") in curve_keys([("g", lines)])
    assert [k for k, _ in curve_keys([("g", lines)]) if k.startswith("bench_")] == ["bench_cifar100_test"]
