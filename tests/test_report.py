"""`nasrun report` on hand-made run folders: grouping, mean ± sample std, files, plots; `show --plot`."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from nasrun.report import summary as rep
from nasrun.genotype.genotype import PUBLISHED

GENOTYPE = PUBLISHED["DARTS_V2"].to_dict()


def make_run(folder: Path, overrides: list[str], result: dict, metrics: list[dict] | None = None,
             alphas: bool = False, job: str = "search") -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"name": job}}}))
    (folder / "result.json").write_text(json.dumps(result))
    if metrics is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    if alphas:
        rng = np.random.default_rng(0)
        w = rng.random((len(metrics or [1]), 14, 8))
        w /= w.sum(-1, keepdims=True)
        np.savez(folder / "alphas.npz", normal=w, reduce=w[:, ::-1], ops=np.array(GENOTYPE["ops"]))
        (folder / "genotype.json").write_text(json.dumps(GENOTYPE))
    return folder


def search_result(seed: int, val_acc: float, skip: int, seconds: float) -> dict:
    return {"status": "completed", "command": "search", "seed": seed, "wall_seconds": seconds,
            "final": {"val_acc": val_acc, "skip_normal": skip}, "genotype": GENOTYPE, "config": {"seed": seed}}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Two etas x three seeds of a search sweep, one of them failed, plus a folder still running."""
    root = tmp_path / "sweep"
    values = {0.1: [(0.50, 1, 3600.0), (0.60, 3, 7200.0), (0.70, 2, 5400.0)],
              0.5: [(0.40, 0, 1800.0), (0.45, 1, 1800.0)]}
    k = 0
    for eta, runs in values.items():
        for seed, (acc, skip, secs) in enumerate(runs):
            rows = [{"epoch": e, "val_acc": acc * (e + 1) / 2, "skip_normal": skip} for e in range(2)]
            make_run(root / f"{k}_eta-{eta}_seed-{seed}", ["dataset=digits", f"estimator.eta={eta}", f"seed={seed}",
                                                           "device=cpu"],
                     search_result(seed, acc, skip, secs), rows, alphas=(k == 0))
            k += 1
    make_run(root / f"{k}_eta-0.5_seed-2", ["dataset=digits", "estimator.eta=0.5", "seed=2"],
             {"status": "failed", "reason": "NonFiniteLoss: training loss is nan", "config": {"seed": 2}})
    (root / f"{k + 1}_eta-0.5_seed-3" / ".hydra").mkdir(parents=True)
    (root / f"{k + 1}_eta-0.5_seed-3" / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["dataset=digits", "estimator.eta=0.5", "seed=3"]))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_groups_by_overrides_without_the_seed(sweep: Path):
    groups = rep.collect([sweep])
    assert [g.label for g in groups] == ["estimator.eta=0.1", "estimator.eta=0.5"]
    assert rep.shared_overrides(groups) == ["dataset=digits"]  # device is never a group key
    g1, g5 = groups
    assert (len(g1.runs), g1.count("completed"), g1.count("failed"), g1.unfinished) == (3, 3, 0, 0)
    assert (len(g5.runs), g5.count("completed"), g5.count("failed"), g5.unfinished) == (4, 2, 1, 1)
    assert [r.seed for r in g5.runs] == [0, 1, 2, 3]


def test_mean_and_sample_std(sweep: Path):
    g1, g5 = rep.collect([sweep])
    n, mean, std = g1.stats("search_val_acc")
    assert n == 3 and mean == pytest.approx(0.6) and std == pytest.approx(statistics.stdev([0.5, 0.6, 0.7]))
    assert std == pytest.approx(0.1)  # sample std (n - 1), not population std (0.0816)
    assert g1.stats("skip_normal")[1:] == pytest.approx((2.0, 1.0))
    assert g1.stats("search_hours")[1:] == pytest.approx((1.5, 0.5))
    n, mean, std = g5.stats("search_val_acc")  # the failed and unfinished runs do not count
    assert n == 2 and mean == pytest.approx(0.425) and std == pytest.approx(statistics.stdev([0.40, 0.45]))
    assert g5.stats("test_acc") == (0, None, None)


def test_one_value_has_no_std():
    assert rep.summarize([0.9]) == (1, 0.9, None)
    assert rep.summarize([]) == (0, None, None)


def test_report_writes_table_csv_and_markdown(sweep: Path, tmp_path: Path):
    out = io.StringIO()
    groups, folder = rep.report([sweep], tmp_path / "out", stdout=out)
    text = out.getvalue()
    assert "60.00 ± 10.00" in text and "42.50 ± 3.54" in text
    assert "sample standard deviation (n - 1)" in text
    assert "failed:" in text and "NonFiniteLoss" in text
    rows = list(csv.DictReader((folder / "summary.csv").open()))
    assert [r["group"] for r in rows] == ["estimator.eta=0.1", "estimator.eta=0.5"]
    assert float(rows[0]["search_val_acc_pct_mean"]) == pytest.approx(60.0)
    assert float(rows[0]["search_val_acc_pct_std"]) == pytest.approx(10.0)
    assert (rows[1]["runs"], rows[1]["completed"], rows[1]["failed"], rows[1]["unfinished"]) == ("4", "2", "1", "1")
    assert rows[1]["test_acc_pct_mean"] == "" and rows[1]["test_acc_n"] == "0"
    md = (folder / "summary.md").read_text()
    assert "| estimator.eta=0.1 | 3 | 3 | 0 | 60.00 ± 10.00 |" in md
    assert "Overrides shared by every group: `dataset=digits`" in md
    assert "## Runs that did not complete" in md


def test_retrain_runs_take_the_search_overrides_and_figures(tmp_path: Path):
    searches = [make_run(tmp_path / "s" / f"{i}_seed-{i}", ["estimator.eta=0.3", f"seed={i}"],
                         search_result(i, 0.5 + 0.1 * i, i, 360.0)) for i in range(2)]
    for i, s in enumerate(searches):
        make_run(tmp_path / "r" / f"{i}", [f"genotype={s}", "seed=0"], job="retrain", result={
            "status": "completed", "command": "retrain", "seed": 0, "search_run": str(s), "test_acc": 0.9 + 0.02 * i,
            "test_error": 0.1 - 0.02 * i, "params": 3_300_000 + 100_000 * i, "wall_seconds": 7200.0,
            "genotype": GENOTYPE})
    groups = rep.collect([tmp_path / "r"])
    assert len(groups) == 1 and groups[0].label == "genotype=<search estimator.eta=0.3>"
    g = groups[0]
    assert g.stats("test_acc")[1:] == pytest.approx((0.91, statistics.stdev([0.9, 0.92])))
    assert g.stats("search_val_acc")[1] == pytest.approx(0.55)
    assert g.stats("params_m")[1] == pytest.approx(3.35)
    assert g.stats("retrain_hours")[1:] == pytest.approx((2.0, 0.0))


def test_plots(sweep: Path, tmp_path: Path):
    pytest.importorskip("matplotlib")
    _, folder = rep.report([sweep], tmp_path / "out", plot=True, stdout=io.StringIO())
    plots = folder / "plots"
    assert (plots / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (plots / "alphas").iterdir()] == ["0_eta-0.1_seed-0.png"]
    cells = sorted(p.name for p in (plots / "cells").iterdir())
    assert len(cells) == 5  # every completed run (genotype.json, else the genotype in result.json)


def test_report_without_runs_exits_2(tmp_path: Path, capsys):
    assert rep.main([str(tmp_path)]) == 2
    assert "no run folders" in capsys.readouterr().err


def test_show_plot_draws_one_genotype(tmp_path: Path, capsys):
    pytest.importorskip("matplotlib")
    from nasrun.cli.show import show

    target = tmp_path / "cells.png"
    show(["genotype=DARTS_V2", "recipe=quick", "dataset=digits", f"--plot={target}"])
    assert target.read_bytes()[:4] == b"\x89PNG"
    assert f"cell diagrams: {target}" in capsys.readouterr().out
