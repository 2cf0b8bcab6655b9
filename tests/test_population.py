"""Population search: the members of a sweep in one process, each exactly its solo run.

In float64 every member ends where its solo run ends (the same genotype, alphas within 1e-8: in fact
bit for bit, since each member draws from its own random state); the launcher groups a sweep by its
member keys, writes solo-format folders, keeps a failing member's failure to itself, records every
member on SIGTERM and resumes them all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SEARCH, TINY_SYNTH
from nasrun.config.compose import as_plain_dict, compose, to_typed
from nasrun.config.members import group_jobs, member_label, shape_key
from nasrun.errors import ConfigError
from nasrun.run.population import Member, run_population
from nasrun.search.loop import run_search

FP64 = [*TINY_SYNTH, "precision=fp64"]


def _typed(*overrides: str):
    return to_typed(compose("search", [*FP64, *overrides]))


def _alphas(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "alphas.npz") as data:
        return {k: data[k] for k in data.files if k != "ops"}


def _assert_same_run(member: Path, solo: Path) -> None:
    assert json.loads((member / "genotype.json").read_text())["cells"] == \
        json.loads((solo / "genotype.json").read_text())["cells"]
    a, b = _alphas(member), _alphas(solo)
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-8
    rows = [json.loads(line) for line in (member / "metrics.jsonl").read_text().splitlines()]
    solo_rows = [json.loads(line) for line in (solo / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in rows] == pytest.approx([r["val_loss"] for r in solo_rows], rel=1e-10, abs=1e-12)


def _population_matches_solo(tmp_path: Path, configs: list, engine: str = "turns") -> None:
    for i, cfg in enumerate(configs):
        run_search(cfg, tmp_path / f"solo{i}")
    started = time.perf_counter()
    outcomes = run_population([Member(cfg, tmp_path / f"member{i}", f"#{i}") for i, cfg in enumerate(configs)],
                              engine)
    wall = time.perf_counter() - started
    assert [o.status for o in outcomes] == ["completed"] * len(configs)
    # a member's search time is its own, not the population's (the others' epochs are left out)
    assert sum(o.result["wall_seconds"] for o in outcomes) <= wall * 1.05
    for i in range(len(configs)):
        _assert_same_run(tmp_path / f"member{i}", tmp_path / f"solo{i}")


# ------------------------------------------------------------------------------------------ grouping
def test_jobs_differing_only_in_member_keys_form_one_population():
    plain = [as_plain_dict(to_typed(compose("search", [*TINY_SEARCH, "method=amended", *o]))) for o in (
        ["seed=0"], ["seed=1", "estimator.eta=0.5"], ["seed=2", "search.arch_lr=0.01"], ["supernet.C=4"],
        ["seed=3", "supernet.C=4"], ["method=darts"])]
    assert group_jobs(plain, "search", 8) == [[0, 1, 2], [3, 4], [5]]
    assert group_jobs(plain, "search", 2) == [[0, 1], [2], [3, 4], [5]]
    assert member_label(plain[1], plain[:3]) == "seed=1 estimator.eta=0.5 search.arch_lr=0.0003"
    recipes = [as_plain_dict(to_typed(compose("pipeline", [*TINY_SEARCH, o]))) for o in ("recipe.C=4", "recipe.C=8")]
    assert shape_key(recipes[0], "pipeline") == shape_key(recipes[1], "pipeline")  # retraining runs per job
    assert shape_key(recipes[0], "search") != shape_key(recipes[1], "search")


# ------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("engine", ["turns", "stacked"])
def test_three_seeds_end_at_their_solo_runs(tmp_path, engine):
    _population_matches_solo(tmp_path, [_typed(f"seed={s}") for s in (0, 1, 2)], engine)


def test_stacked_members_with_their_own_learning_rates_and_warm_up_end_at_their_solo_runs(tmp_path):
    """One network for all three; each member's SGD (its lr), Adam and clip are its own."""
    configs = [_typed(f"seed={s}", f"search.lr={lr}", f"search.arch_lr={alr}", "search.arch_warmup_epochs=1",
                      "search.epochs=3") for s, lr, alr in ((0, 0.025, 3e-4), (0, 0.1, 3e-3), (1, 0.05, 1e-3))]
    _population_matches_solo(tmp_path, configs, "stacked")


@pytest.mark.parametrize("hvp", ["finite_difference", "exact"])
def test_stacked_amended_members_with_their_own_eta_and_radius_end_at_their_solo_runs(tmp_path, hvp):
    """The eta sweep in one network: each member's H v and B u are its own blocks of the stacked products."""
    configs = [_typed("method=amended", f"estimator.hvp={hvp}", f"estimator.eta={eta}", f"estimator.fd_radius={r}")
               for eta, r in ((0.1, 0.01), (1.0, 0.01), (0.5, 0.03))]
    _population_matches_solo(tmp_path, configs, "stacked")
    rows = [json.loads(line) for line in (tmp_path / "member1" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["second_norm"] > 0 for r in rows)  # the amending term is there, not first order


def test_stacked_pcdarts_members_end_at_their_solo_runs(tmp_path):
    """Partial channels and edge normalisation stacked: each member's betas are its own, like its alphas."""
    configs = [_typed("method=pcdarts", "supernet.partial_channels=2", f"seed={s}", f"search.arch_lr={alr}",
                      "search.arch_warmup_epochs=1", "search.epochs=3") for s, alr in ((0, 6e-4), (1, 6e-4), (0, 3e-3))]
    _population_matches_solo(tmp_path, configs, "stacked")
    # the edge weights are in the compared history, and the members' differ
    edges = [_alphas(tmp_path / f"member{i}")["edges_normal"] for i in range(3)]
    assert float(np.abs(edges[0] - edges[2]).max()) > 1e-6 and float(np.abs(edges[0] - edges[1]).max()) > 1e-6


@pytest.mark.parametrize("hvp", ["finite_difference", pytest.param("exact", marks=pytest.mark.slow)])
def test_stacked_second_order_members_end_at_their_solo_runs(tmp_path, hvp):
    """Each member's virtual step is its own SGD step (its lr xi, momentum buffer and decay) on its blocks; B v' is
    blockwise, each member with its own radius."""
    configs = [_typed("method=darts_2nd", f"estimator.hvp={hvp}", f"seed={s}", f"search.lr={lr}",
                      f"search.momentum={mu}", f"estimator.fd_radius={r}")
               for s, lr, mu, r in ((0, 0.025, 0.9, 0.01), (1, 0.1, 0.5, 0.01), (0, 0.05, 0.9, 0.03))]
    _population_matches_solo(tmp_path, configs, "stacked")
    rows = [json.loads(line) for line in (tmp_path / "member1" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["second_norm"] > 0 for r in rows)  # the unrolled term is there, not first order


@pytest.mark.parametrize("method,extra", [
    ("sdarts_rs", []),
    ("sdarts_adv", []),
    pytest.param("sdarts_adv", ["perturbation.simplex=project", "perturbation.epsilon_ramp=to_max",
                                "perturbation.pgd_steps=3"], marks=pytest.mark.slow),
])
def test_stacked_sdarts_members_with_their_own_radius_end_at_their_solo_runs(tmp_path, method, extra):
    """Each member draws its noise (SDARTS-RS, the attack's start) from its own random state; the attack runs for
    every member at once, each with its own radius, and keeps a member's clean weights where its loss did not rise."""
    configs = [_typed(f"method={method}", f"seed={s}", f"perturbation.epsilon={eps}", *extra)
               for s, eps in ((0, 0.3), (1, 0.3), (0, 0.6))]
    _population_matches_solo(tmp_path, configs, "stacked")


@pytest.mark.parametrize("method", [["method=darts"],
                                    pytest.param(["method=amended", "estimator.eta=0.5"], marks=pytest.mark.slow)])
def test_stacked_members_on_nb201_end_at_their_solo_runs(tmp_path, method):
    configs = [to_typed(compose("search", [*_space_overrides("nb201"), *method, f"seed={s}"])) for s in (0, 1, 2)]
    _population_matches_solo(tmp_path, configs, "stacked")


@pytest.mark.slow
@pytest.mark.parametrize("space", ["rdarts_s3", "rdarts_s1"])
def test_stacked_members_on_rdarts_spaces_end_at_their_solo_runs(tmp_path, space):
    """S3's three ops on every edge; S1's own op pair per edge."""
    keep = [o for o in FP64 if not o.startswith(("space.", "supernet.layers"))]
    _population_matches_solo(tmp_path, [to_typed(compose("search", [*keep, f"space={space}", f"seed={s}"]))
                                        for s in (0, 1)], "stacked")


def test_two_etas_end_at_their_solo_runs(tmp_path):
    _population_matches_solo(tmp_path, [_typed("method=amended", f"estimator.eta={eta}") for eta in (0.1, 1.0)])


def test_a_perturbation_selection_member_is_its_solo_run(tmp_path):
    configs = [_typed(f"seed={s}", "method=darts_pt", "search.epochs=1", "selection.interval=1") for s in (0, 1)]
    _population_matches_solo(tmp_path, configs)
    for i in range(2):
        rows = [(tmp_path / f"{name}{i}" / "selection.jsonl").read_text() for name in ("member", "solo")]
        decisions = [[json.loads(line)["decisions"] for line in r.splitlines()] for r in rows]
        assert decisions[0] == decisions[1] and len(decisions[0]) == 6


SPACES = {"darts": [], "rdarts_s3": ["space=rdarts_s3"], "nb201": ["space=nb201", "supernet.layers=1"]}
METHODS = {
    "darts": ["method=darts"], "darts_2nd": ["method=darts_2nd"], "amended": ["method=amended"],
    "amended_exact": ["method=amended", "estimator.hvp=exact"],
    "pcdarts": ["method=pcdarts", "supernet.partial_channels=2"],
    "sdarts_rs": ["method=sdarts_rs"], "sdarts_adv": ["method=sdarts_adv"],
}


def _space_overrides(space: str) -> list[str]:
    keep = [o for o in FP64 if not o.startswith(("space.", "supernet.layers"))] if space != "darts" else FP64
    return [*keep, *SPACES[space]]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["turns", "stacked"])
@pytest.mark.parametrize("space", list(SPACES))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_member_method_on_every_space_is_its_solo_run(tmp_path, method, space, engine):
    configs = [to_typed(compose("search", [*_space_overrides(space), *METHODS[method], f"seed={s}"])) for s in (0, 1, 2)]
    _population_matches_solo(tmp_path, configs, engine)


def test_a_stacked_population_builds_its_network_once_and_again_only_after_a_failure(tmp_path, monkeypatch):
    from nasrun.supernet.stacked import StackedSuperNet

    built: list[int] = []
    linked = StackedSuperNet.linked.__func__

    def counting(cls, nets):
        built.append(len(nets))
        return linked(cls, nets)
    monkeypatch.setattr(StackedSuperNet, "linked", classmethod(counting))
    configs = [_typed("seed=0", "search.epochs=3"), _typed("seed=1", "search.epochs=3")]
    run_population([Member(cfg, tmp_path / f"a{i}") for i, cfg in enumerate(configs)], "stacked")
    assert built == [2]  # kept from epoch to epoch
    built.clear()
    configs.insert(1, _typed("seed=2", "search.epochs=3", "search.lr=1e300"))
    outcomes = run_population([Member(cfg, tmp_path / f"b{i}") for i, cfg in enumerate(configs)], "stacked")
    assert [o.status for o in outcomes] == ["completed", "failed", "completed"]
    assert built == [3, 2]  # the survivors once more, then kept
    run_search(configs[2], tmp_path / "solo")
    _assert_same_run(tmp_path / "b2", tmp_path / "solo")


@pytest.mark.parametrize("engine", ["turns", "stacked"])
def test_a_member_that_fails_fails_alone(tmp_path, engine):
    configs = [_typed("seed=0"), _typed("seed=0", "search.lr=1e300"), _typed("seed=1")]
    outcomes = run_population([Member(cfg, tmp_path / f"m{i}") for i, cfg in enumerate(configs)], engine)
    assert [o.status for o in outcomes] == ["completed", "failed", "completed"]
    record = json.loads((tmp_path / "m1" / "result.json").read_text())
    assert record["status"] == "failed" and "loss is nan" in record["reason"] and outcomes[1].result == record
    run_search(configs[2], tmp_path / "solo")
    _assert_same_run(tmp_path / "m2", tmp_path / "solo")  # the failure changed nothing for the others


@pytest.mark.parametrize("engine", ["turns", pytest.param("stacked", marks=pytest.mark.slow)])
def test_each_member_logs_only_its_own_lines(tmp_path, engine):
    run_population([Member(_typed(f"seed={s}"), tmp_path / f"m{s}") for s in (0, 1)], engine)
    for s in (0, 1):
        text = (tmp_path / f"m{s}" / "search.log").read_text()
        assert str(tmp_path / f"m{s}") in text and str(tmp_path / f"m{1 - s}") not in text
        assert text.count("epoch 2/2") == 1


# ------------------------------------------------------------------------------------------ the launcher
def _nasrun(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "nasrun", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env, **kwargs)


@pytest.mark.parametrize("args,named", [
    (["search", "hydra/launcher=population"], "needs a sweep: add -m"),
    (["retrain", "-m", "genotype=DARTS_V2", "hydra/launcher=population"], "not allowed for nasrun retrain"),
    (["search", "-m", "seed=0,1", "hydra/launcher=population", "hydra.launcher.max_members=0"],
     "hydra.launcher.max_members=0 is not allowed"),
    (["search", "-m", "seed=0,1", "hydra.launcher.max_members=2"], "a key of hydra/launcher=population only"),
    (["search", "-m", "seed=0,1", "hydra.launcher.engine=stacked"], "a key of hydra/launcher=population only"),
    (["search", "-m", "seed=0,1", "hydra/launcher=population", "hydra.launcher.engine=fast"],
     "hydra.launcher.engine=fast is not allowed: turns .* or stacked"),
    (["search", "-m", "seed=0,1", "method=nasp", "hydra/launcher=population", "hydra.launcher.engine=stacked"],
     "engine=stacked is not allowed for the job .*not estimator=proximal; perturbation=discrete"),
    (["search", "-m", "seed=0,1", "method=pdarts", "hydra/launcher=population", "hydra.launcher.engine=stacked"],
     "not schedule=progressive"),
    (["search", "-m", "seed=0,1", "space=rdarts_s4", "hydra/launcher=population", "hydra.launcher.engine=stacked"],
     "not space=rdarts_s4's ops"),
])
def test_the_launcher_is_refused_where_it_cannot_run(tmp_path, args, named):
    from nasrun.cli.preflight import check_command_line

    command, *rest = args
    with pytest.raises(ConfigError, match=named):
        check_command_line(command, rest)


def test_a_sweep_runs_as_a_population_with_solo_folders(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _nasrun("search", "-m", "seed=0", "search.lr=0.025,1e9", "hydra/launcher=population", *TINY_SYNTH,
                   "threads=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # one job of two failed: the sweep says so
    assert "Traceback" not in proc.stderr
    assert "Launching 2 jobs as 1 population(s)" in proc.stdout + proc.stderr
    good, bad = sorted(p for p in sweep.iterdir() if p.is_dir())
    for name in ("genotype.json", "alphas.npz", "metrics.jsonl", "genotypes.jsonl", "checkpoint.pt", "search.log",
                 ".hydra/config.yaml", ".hydra/overrides.yaml", "cells.png"):
        assert (good / name).is_file(), name
    assert json.loads((good / "result.json").read_text())["status"] == "completed"
    assert json.loads((bad / "result.json").read_text())["status"] == "failed"
    assert f"{bad}: failed: NonFiniteLoss: training loss is nan" in proc.stderr
    run_search(to_typed(compose("search", [*TINY_SYNTH, "threads=1", "seed=0"])), tmp_path / "solo")
    _assert_same_run(good, tmp_path / "solo")  # fp32 too (one thread, as here): bit for bit its solo run
    report = _nasrun("report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    import csv

    rows = {r["group"]: r for r in csv.DictReader((sweep / "summary.csv").open())}
    assert (rows["search.lr=0.025"]["completed"], rows["search.lr=1000000000.0"]["failed"]) == ("1", "1")
    val_acc = json.loads((good / "result.json").read_text())["final"]["val_acc"]
    assert float(rows["search.lr=0.025"]["search_val_acc_pct_mean"]) == pytest.approx(100 * val_acc)
    from nasrun.cli.preflight import check_command_line

    check_command_line("retrain", [f"genotype={good}", "recipe=quick", "recipe.epochs=1"])


@pytest.mark.slow
def test_a_stacked_sweep_runs_through_the_launcher_with_solo_folders(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _nasrun("search", "-m", "seed=0,1", "hydra/launcher=population", "hydra.launcher.engine=stacked", *FP64,
                   "threads=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for seed in (0, 1):
        run_search(_typed(f"seed={seed}", "threads=1"), tmp_path / f"solo{seed}")
        _assert_same_run(sweep / f"{seed}_seed-{seed}", tmp_path / f"solo{seed}")
    again = _nasrun("search", "-m", "seed=0,1", "hydra/launcher=population", "hydra.launcher.engine=stacked", *FP64,
                    "threads=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout + again.stderr, again.stderr


def _wait_for(predicate, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_records_every_member_and_a_rerun_resumes_them_exactly(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["search", "-m", "seed=0,1", "hydra/launcher=population", *TINY_SYNTH, "search.epochs=12", "threads=1",
            f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, "-m", "nasrun", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = sweep / "1_seed-1" / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = [line for line in err.splitlines() if line.startswith("nasrun")]
    assert lines == ["nasrun search: interrupted by SIGTERM; each of the 2 member folders records it (result.json): "
                     "rerun the same command to resume"], err
    for member in ("0_seed-0", "1_seed-1"):
        record = json.loads((sweep / member / "result.json").read_text())
        assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"
    resumed = _nasrun(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for seed in (0, 1):
        run_search(to_typed(compose("search", [*TINY_SYNTH, "search.epochs=12", "threads=1", f"seed={seed}"])),
                   tmp_path / f"solo{seed}")
        _assert_same_run(sweep / f"{seed}_seed-{seed}", tmp_path / f"solo{seed}")
    before = {p: p.stat().st_mtime_ns for p in sweep.rglob("checkpoint.pt")}
    again = _nasrun(*args, cwd=tmp_path)  # every member completed: none is redone
    assert again.returncode == 0 and {p: p.stat().st_mtime_ns for p in before} == before, again.stderr


def test_a_pipeline_sweep_searches_as_a_population_then_retrains_each_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _nasrun("pipeline", "-m", "seed=0,1", "hydra/launcher=population", *TINY_SYNTH, "search.epochs=1",
                   "recipe=quick", "recipe.epochs=1", "recipe.C=4", "recipe.layers=3", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        assert json.loads((job / "result.json").read_text())["status"] == "completed"
        assert json.loads((job / "search" / "result.json").read_text())["status"] == "completed"
        assert json.loads((job / "retrain" / "result.json").read_text())["test_acc"] is not None
        log = (job / "pipeline.log").read_text()
        assert "search: darts on synthetic" in log and str(job) in log


@pytest.mark.parametrize("engine", ["turns", "stacked"])
def test_an_interrupted_member_folder_resumes_as_a_solo_run(tmp_path, engine):
    """A signal while one member runs records every member; each folder then resumes on its own, exactly (a
    stacked member's plain supernet checkpoint resumes in the solo run's fused one)."""
    from nasrun.run.signals import Interrupted

    configs = [_typed(f"seed={s}", "search.epochs=3") for s in (3, 4)]

    def stop(epoch: int, row: dict) -> None:
        raise Interrupted(signal.SIGTERM)

    members = [Member(configs[0], tmp_path / "m0"), Member(configs[1], tmp_path / "m1", on_epoch_end=stop)]
    with pytest.raises(Interrupted):
        run_population(members, engine)
    for i in (0, 1):
        record = json.loads((tmp_path / f"m{i}" / "result.json").read_text())
        assert (record["status"], record["last_epoch"]) == ("interrupted", 0)
        run_search(configs[i], tmp_path / f"m{i}")  # the member folder resumes as a solo run
        run_search(configs[i], tmp_path / f"solo{i}")
        _assert_same_run(tmp_path / f"m{i}", tmp_path / f"solo{i}")
