"""P-DARTS: the progressive schedule (stages, op dropping, skip dropout, skip refinement) and its resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_RETRAIN, TINY_SEARCH, TINY_SYNTH
from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.genotype.genotype import Genotype
from nasrun.train.retrain import run_retrain
from nasrun.search.loop import run_search
from nasrun.spaces import DARTS_OPS
from nasrun.spaces.space import Space, derive
from nasrun.supernet import MixedOp, SuperNet, keep_strongest, refine_skips, skip_dropout_rate

SKIP = DARTS_OPS.index("skip_connect")


def refine(normal, reduce, ops, nodes, max_skips):
    """Skip refinement of a shared normal and reduction cell whose edges all have ``ops``."""
    space = Space.simple(ops, nodes)
    edge_ops = [list(range(len(ops)))] * space.num_edges
    return refine_skips(space, {"normal": normal, "reduce": reduce}, {"normal": edge_ops, "reduce": edge_ops},
                        layers=3, max_skips=max_skips)


def normal_pairs(genotype: dict):
    """The ``(op, input)`` pairs of the normal cell of a genotype as written to JSON."""
    return Genotype.from_dict(genotype).normal




def test_op_dropping_keeps_the_strongest_ops_of_every_edge():
    g = torch.Generator().manual_seed(0)
    edge_ops = [[0, 1, 3, 4, 6], [1, 2, 3, 5, 7], [0, 3, 4, 5, 6]]
    w = torch.softmax(torch.randn(3, 5, generator=g), -1)
    w[2, 0] = 0.9  # `none` strongest on edge 2
    kept = keep_strongest(w, edge_ops, 3, DARTS_OPS, drop_none=False)
    for e, row in enumerate(edge_ops):
        best = sorted(np.argsort(-w[e].numpy(), kind="stable")[:3])
        assert kept[e] == sorted(row[c] for c in best)
    assert 0 in kept[2]
    last = keep_strongest(w, edge_ops, 1, DARTS_OPS, drop_none=True)
    assert 0 not in last[2] and len(last[2]) == 1  # the last stage drops `none` whatever its weight
    assert last[1] == [edge_ops[1][int(w[1].argmax())]]
    alone = keep_strongest(w, edge_ops, 1, DARTS_OPS, drop_none=False)
    assert alone[2] != [0]  # an edge never keeps `none` alone


@pytest.mark.parametrize("seed", range(5))
def test_refinement_never_leaves_more_than_M_skips(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(14, 8, generator=g)
    logits[:, SKIP] += 2.5  # skip connections dominate, as in a collapsed search
    normal, reduce = torch.softmax(logits, -1), torch.softmax(torch.randn(14, 8, generator=g), -1)
    plain = derive(normal, reduce, DARTS_OPS)
    assert plain.count("skip_connect", "normal") > 2
    for M in range(0, 4):
        genotype, family = refine(normal, reduce, DARTS_OPS, 4, M)
        assert genotype.count("skip_connect", "normal") <= M
        assert genotype.reduce == plain.reduce  # the reduction cell is left alone
        counts = [f["skips"] for f in family]
        assert counts == sorted(set(counts), reverse=True) and counts[0] == plain.count("skip_connect", "normal")
    assert refine(normal, reduce, DARTS_OPS, 4, 8)[0] == plain  # nothing to do


def test_refinement_strikes_the_weakest_skip_first():
    ops = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
    normal = torch.full((5, 4), 0.01)  # node 0: edges 0-1 (from states 0, 1); node 1: edges 2-4 (states 0, 1, 2)
    normal[:, 2] = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])  # every edge prefers skip ...
    normal[:, 3] = 0.3  # ... over its conv
    assert derive(normal, normal, ops, nodes=2).count("skip_connect", "normal") == 4
    # M = 3: edge 3 (0.6) loses its skip, drops to 0.3 and gives its place to edge 4 (skip 0.5); that
    # skip goes next, and the tie between edges 3 and 4 (conv 0.3 each) keeps the lower source
    genotype, family = refine(normal, normal, ops, 2, 3)
    assert genotype.normal == (("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_3x3", 1))
    assert [f["skips"] for f in family] == [4, 3, 2, 1, 0]  # the whole family is recorded, as the reference logs it
    assert normal_pairs(family[1]["genotype"]) == genotype.normal
    assert Genotype.from_dict(family[1]["genotype"]) == genotype
    genotype, _ = refine(normal, normal, ops, 2, 1)
    assert genotype.normal == (("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1))


def test_skip_dropout_schedule():
    assert skip_dropout_rate(0.4, 0, 25, 10) == pytest.approx(0.4 * 24 / 25)
    assert skip_dropout_rate(0.4, 9, 25, 10) == pytest.approx(0.4 * 15 / 25)
    assert skip_dropout_rate(0.4, 10, 25, 10) == pytest.approx(0.4)  # back to p0 when the alphas start to move
    assert skip_dropout_rate(0.4, 15, 25, 10) == pytest.approx(0.4 * np.exp(-1.0))


def test_skip_dropout_acts_on_stride_one_skips_in_training_only():
    torch.manual_seed(0)
    ops = ["skip_connect"]
    x = torch.ones(4, 2, 6, 6)
    one = MixedOp(2, 1, ops)
    one.skip_dropout = 0.5
    dropped = one(x, torch.ones(1))
    assert (dropped == 0).any() and torch.allclose(dropped[dropped != 0], torch.tensor(2.0))
    assert torch.equal(one.eval()(x, torch.ones(1)), x)
    two = MixedOp(2, 2, ops)  # the reduction skip (factorized reduce) is not dropped
    two.skip_dropout = 0.5
    torch.manual_seed(1)
    a = two(x, torch.ones(1))
    assert torch.equal(a, two(x, torch.ones(1)))
    net = SuperNet(2, 3, 3, ops=["none", "skip_connect", "sep_conv_3x3"], nodes=2, in_channels=1)
    net.set_skip_dropout(0.3)
    assert {m.skip_dropout for m in net.modules() if isinstance(m, MixedOp)} == {0.3}


def test_schedule_settings_are_checked():
    with pytest.raises(ConfigError, match="schedule.stage_keep"):
        to_typed(compose("search", ["method=pdarts", "schedule.stage_keep=[5,3]"]))
    with pytest.raises(ConfigError, match="schedule.stage_keep"):
        to_typed(compose("search", ["method=pdarts", "schedule.stage_keep=[3,5,1]"]))
    with pytest.raises(ConfigError, match="supernet.skip_dropout"):
        to_typed(compose("search", ["method=pdarts", "supernet.skip_dropout=[0.1,0.2]"]))
    with pytest.raises(ConfigError, match="supernet.skip_dropout"):
        to_typed(compose("search", ["supernet.skip_dropout=[0.1,0.2]"]))  # one stage, two rates
    cfg = to_typed(compose("search", ["method=pdarts"]))
    assert (cfg.supernet.layers, cfg.schedule.stage_add_layers, cfg.schedule.stage_keep) == (5, [0, 6, 12], [5, 3, 1])
    assert (cfg.search.epochs, cfg.search.arch_warmup_epochs, cfg.schedule.max_skips) == (25, 10, 2)


PROGRESSIVE = [*TINY_SYNTH, "method=pdarts", "schedule.stage_add_layers=[0,1,2]", "schedule.stage_keep=[3,2,1]",
               "search.epochs=2", "search.arch_warmup_epochs=1", "search.arch_lr=0.3", "schedule.max_skips=0"]


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def progressive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pdarts") / "straight"
    run_search(to_typed(compose("search", PROGRESSIVE)), out)
    return out


def test_stages_grow_and_drop_ops(progressive: Path):
    stages = json.loads((progressive / "stages.json").read_text())
    assert [s["layers"] for s in stages] == [3, 4, 5]
    assert [len(s["ops"]["normal"][0]) for s in stages] == [4, 3, 2]
    assert [len(s["kept"]["reduce"][0]) for s in stages] == [3, 2, 1]
    assert [s["skip_dropout"] for s in stages] == [0.1, 0.4, 0.7]
    assert all(s["kept"]["normal"] == n["ops"]["normal"] for s, n in zip(stages, stages[1:]))
    assert all("none" not in row for row in stages[-1]["kept"]["normal"])
    rows = [json.loads(x) for x in (progressive / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["stage_epoch"], r["layers"], r["arch_active"]) for r in rows] == [
        (0, 0, 3, False), (0, 1, 3, True), (1, 0, 4, False), (1, 1, 4, True), (2, 0, 5, False), (2, 1, 5, True)]
    assert rows[1]["skip_dropout"] == pytest.approx(0.1) and rows[2]["skip_dropout"] == pytest.approx(0.4 / 2)
    result = json.loads((progressive / "result.json").read_text())
    assert result["epochs"] == 6 and len(result["stages"]) == 3
    assert normal_pairs(result["genotype"]) and all(op != "skip_connect" for op, _ in normal_pairs(result["genotype"]))
    assert result["skip_refinement"]["max_skips"] == 0
    assert json.loads((progressive / "genotype.json").read_text()) == result["genotype"]


def test_each_stage_keeps_its_strongest_ops_and_starts_afresh(progressive: Path):
    """Stage transitions re-initialise, as P-DARTS does: a new supernet with new weights and new
    alphas (1e-3 N(0, 1)) over the kept ops; nothing but the op sets carries over."""
    stages = json.loads((progressive / "stages.json").read_text())
    alphas = np.load(progressive / "alphas.npz")
    ops = list(alphas["ops"])
    for s, stage in enumerate(stages):
        end = alphas["normal"][2 * s + 1]  # the stage's last epoch, on the full op vocabulary
        assert np.abs(end - end.max(-1, keepdims=True)).max() > 0.05  # the alphas did move in the stage
        for e, kept in enumerate(stage["kept"]["normal"]):
            candidates = [ops.index(o) for o in stage["ops"]["normal"][e]]
            if s == len(stages) - 1:
                candidates = [k for k in candidates if ops[k] != "none"]
            ranked = sorted(candidates, key=lambda k: (-end[e, k], k))
            assert sorted(ranked[: len(kept)]) == [ops.index(o) for o in kept]
        if s + 1 < len(stages):
            start = alphas["normal"][2 * (s + 1)]  # the next stage's first epoch has the alphas frozen
            k = len(stage["kept"]["normal"][0])
            for e, kept in enumerate(stage["kept"]["normal"]):
                on = [ops.index(o) for o in kept]
                np.testing.assert_allclose(start[e, on], 1 / k, atol=5e-3)
                assert np.count_nonzero(start[e]) == k


@pytest.mark.parametrize("stop_at", [1, 2])  # at the end of stage 0, and inside stage 1
def test_interrupted_progressive_search_resumes_to_the_same_result(progressive: Path, tmp_path: Path, stop_at):
    cfg = to_typed(compose("search", PROGRESSIVE))

    def stop(epoch: int, row: dict) -> None:
        if epoch == stop_at:
            raise Stop

    with pytest.raises(Stop):
        run_search(cfg, tmp_path / "run", on_epoch_end=stop)
    resumed = run_search(cfg, tmp_path / "run")
    straight = json.loads((progressive / "result.json").read_text())
    assert resumed["genotype"] == straight["genotype"] and resumed["stages"] == straight["stages"]
    a, b = np.load(progressive / "alphas.npz"), np.load(tmp_path / "run" / "alphas.npz")
    np.testing.assert_array_equal(a["normal"], b["normal"])
    np.testing.assert_array_equal(a["reduce"], b["reduce"])
    assert (progressive / "stages.json").read_text() == (tmp_path / "run" / "stages.json").read_text()


def test_preset_searches_and_retrains_on_digits(tmp_path: Path):
    cfg = to_typed(compose("search", [*TINY_SEARCH, "method=pdarts", "dataset.subset=16", "search.batch_size=32",
                                             "supernet.layers=3", "schedule.stage_add_layers=[0,1,2]",
                                             "schedule.stage_keep=[3,2,1]", "search.epochs=1",
                                             "search.arch_warmup_epochs=0"]))
    result = run_search(cfg, tmp_path / "search")
    assert result["status"] == "completed" and result["method"] == "pdarts"
    assert sum(op == "skip_connect" for op, _ in normal_pairs(result["genotype"])) <= 2
    retrain = run_retrain(to_typed(compose("retrain", [f"genotype={tmp_path / 'search'}", *TINY_RETRAIN])),
                          tmp_path / "retrain")
    assert retrain["status"] == "completed"


@pytest.mark.parametrize("extra", [
    ["method=sdarts_adv", "perturbation.pgd_steps=2"],  # SDARTS-ADV's weight step in every stage
    ["method=pcdarts", "supernet.partial_channels=2", "search.arch_warmup_epochs=0"],  # PC-DARTS' supernet per stage
])
def test_progressive_schedule_composes_with_other_axes(tmp_path: Path, extra):
    cfg = to_typed(compose("search", [
        *TINY_SYNTH, *extra, "schedule=progressive", "schedule.stage_add_layers=[0,1]", "schedule.stage_keep=[2,1]",
        "schedule.max_skips=1", "search.epochs=1", "supernet.skip_dropout=[0.2]"]))
    result = run_search(cfg, tmp_path / "run")
    assert result["status"] == "completed" and len(result["stages"]) == 2
    assert [len(s["ops"]["normal"][0]) for s in result["stages"]] == [4, 2]
    assert sum(op == "skip_connect" for op, _ in normal_pairs(result["genotype"])) <= 1


def test_skip_refinement_applies_to_a_single_stage_search(tmp_path: Path):
    cfg = to_typed(compose("search", [*TINY_SYNTH, "search.epochs=1", "schedule.max_skips=0"]))
    result = run_search(cfg, tmp_path / "run")
    assert all(op != "skip_connect" for op, _ in normal_pairs(result["genotype"]))
    assert result["skip_refinement"]["family"][-1]["skips"] == 0
    assert not (tmp_path / "run" / "stages.json").exists()
