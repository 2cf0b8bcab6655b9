"""The selection axis: DARTS-PT's perturbation-based selection against its authors' code, resume, the preset
and `nasrun select` on a finished search.

The reference below is ruocwang/darts-pt's computation written out here (sota/cnn/projection.py
``project_op``/``project_edge`` and ``pt_project``; nasbench201/projection.py): zero one entry (or one edge's
row) of the projected softmax weights, without renormalising, score the supernet in train mode, keep the op
whose removal gives the lowest accuracy (strictly: ties keep the first op), drop the edge whose removal gives
the highest accuracy (ties: the later edge).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_SYNTH
from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.methods import make_selection
from nasrun.methods.selections import Projection, ProjectedMap
from nasrun.run.signals import Interrupted
from nasrun.search.loop import run_search, search_epochs
from nasrun.search.state import build_supernet


def _cfg(*overrides: str):
    return to_typed(compose("search", ["selection=perturbation", *overrides]))


def _supernet(*overrides: str, seed: int = 0):
    cfg = _cfg("supernet.C=2", "supernet.layers=3", *overrides)
    torch.manual_seed(seed)
    net = build_supernet(cfg, 10, 3, cfg.supernet.layers).double()
    return cfg, net


def test_the_decision_plan_is_the_released_one():
    cfg, net = _supernet()
    plan = make_selection(cfg.selection).plan(net)
    # DARTS space: 14 op decisions, then nodes 1, 2, 3 (3, 4, 5 inputs); 5 * 16 + 1 = 81 tuning epochs
    assert (plan.op_decisions, plan.node_decisions, plan.tune_epochs) == (14, 3, 81)
    assert plan.epochs == tuple(range(0, 81, 5))
    cfg, net = _supernet("space=nb201", "supernet.layers=1")
    plan = make_selection(cfg.selection).plan(net)
    # NB201: 6 op decisions, no topology step; 5 * (6 - 1) = 25 epochs, decisions at 0, 5, 10, 15, 20 and 24
    assert (plan.op_decisions, plan.node_decisions, plan.tune_epochs) == (6, 0, 25)
    assert plan.epochs == (0, 5, 10, 15, 20, 24)
    assert plan.at(24) == [5] and plan.at(3) == []
    cfg, net = _supernet("space=nb201", "supernet.layers=1", "selection.interval=1")
    plan = make_selection(cfg.selection).plan(net)
    assert plan.tune_epochs == 5 and plan.at(4) == [4, 5]  # the last two decisions share the last epoch


def test_the_projection_fixes_decided_rows_and_keeps_the_others_bit_for_bit():
    _, net = _supernet()
    alpha = net.alphas("normal")
    proj = Projection(["normal", "reduce"])
    proj.ops["normal"][3] = 2
    proj.dropped["normal"].add(5)
    w = F.softmax(alpha, dim=-1)
    out = proj.apply({"normal": w, "reduce": w})
    assert torch.equal(out["reduce"], w)
    assert torch.equal(out["normal"][3], F.one_hot(torch.tensor(2), w.shape[1]).double())
    assert torch.equal(out["normal"][5], torch.zeros(w.shape[1], dtype=torch.float64))
    rest = [e for e in range(w.shape[0]) if e not in (3, 5)]
    assert torch.equal(out["normal"][rest], w[rest])
    (out["normal"] * torch.rand(w.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))).sum().backward()
    grad = alpha.grad
    assert torch.equal(grad[3], torch.zeros_like(grad[3])) and torch.equal(grad[5], torch.zeros_like(grad[5]))
    assert bool((grad[rest].abs().sum(1) > 0).all())  # the undecided rows still learn
    again = Projection(["normal", "reduce"])
    again.load_state_dict(json.loads(json.dumps(proj.state_dict())))
    assert (again.ops, again.dropped) == (proj.ops, proj.dropped)


def _released_scores(net, kind, edge, x, y):
    """darts-pt ``project_op``'s loop: every op zeroed in turn on the projected softmax row, scored in train mode."""
    out = []
    for opid in range(net.alpha_shape(kind)[1]):
        weights = {k: F.softmax(net.alphas(k), dim=-1).detach().clone() for k in net.kinds}
        mask = torch.ones_like(weights[kind][edge])
        mask[opid] = 0
        weights[kind][edge] = weights[kind][edge] * mask
        net.train()
        with torch.no_grad():
            logits = net(x, weights)
        out.append((float((logits.argmax(1) == y).double().mean()), float(F.cross_entropy(logits, y))))
    return out


@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_an_op_decision_is_the_released_one_on_a_hand_made_supernet(crit):
    cfg, net = _supernet("space.ops=[max_pool_3x3,skip_connect,sep_conv_3x3,avg_pool_3x3]", f"selection.crit={crit}",
                         seed=3)
    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(24, 3, 8, 8, dtype=torch.float64, generator=g), torch.randint(10, (24,), generator=g)
    selection = make_selection(cfg.selection)
    net.alpha_map = ProjectedMap(net.alpha_map, Projection(net.kinds))
    projection = net.alpha_map.projection

    def score(mix):
        net.train()
        with torch.no_grad():
            logits = net(x, mix)
        return float((logits.argmax(1) == y).double().mean()), float(F.cross_entropy(logits, y))

    state = net.state_dict()
    order = torch.Generator().manual_seed(5)
    decision = selection.decide_op(net, "normal", projection, score, order)
    expected_edge = torch.randint(net.num_edges, (1,), generator=torch.Generator().manual_seed(5)).item()
    assert decision["edge"] == expected_edge
    net.load_state_dict(state)  # train-mode scoring moved BN's running statistics, as released; undo it
    reference = _released_scores(net, "normal", expected_edge, x, y)
    got = [(s["acc"], s["loss"]) for s in decision["scores"].values()]
    assert np.allclose(got, reference, rtol=0, atol=1e-12)
    index = 0 if crit == "acc" else 1
    extreme = [r[index] for r in reference]
    best = min(extreme) if crit == "acc" else max(extreme)
    assert decision["op"] == list(decision["scores"])[extreme.index(best)]  # the first of a tie
    assert projection.ops["normal"] == {expected_edge: extreme.index(best)}


def _linear_score(values):
    """A hand-made score: accuracy = sum of the mixing weights times ``values`` (per edge and op)."""
    def score(mix):
        acc = float((mix["normal"] * values).sum())
        return acc, -acc
    return score


def test_op_and_node_decisions_follow_the_released_comparisons_and_ties():
    cfg, net = _supernet("space.ops=[max_pool_3x3,skip_connect,sep_conv_3x3,avg_pool_3x3]")
    selection = make_selection(cfg.selection)
    projection = Projection(net.kinds)
    net.alpha_map = ProjectedMap(net.alpha_map, projection)
    with torch.no_grad():
        net.alphas("normal").zero_()  # uniform weights: removal of op k costs values[e, k] / 4
    values = torch.zeros(net.num_edges, 4, dtype=torch.float64)
    values[:, 2] = 1.0
    values[:, 3] = 1.0  # a tie between ops 2 and 3: the first (2) is kept
    order = torch.Generator().manual_seed(0)
    for _ in range(net.num_edges):
        d = selection.decide_op(net, "normal", projection, _linear_score(values), order)
        assert d["op"] == "sep_conv_3x3"
    assert sorted(projection.ops["normal"]) == list(range(net.num_edges))
    # node 3 (edges 9..13 of the 4-node cell): removal of an edge costs its value; ties drop the later edge
    node_values = torch.zeros(net.num_edges, 4, dtype=torch.float64)
    node_values[9:14, 2] = torch.tensor([5.0, 1.0, 3.0, 1.0, 4.0])
    node = selection.node_edges(net)
    assert node == {1: [2, 3, 4], 2: [5, 6, 7, 8], 3: [9, 10, 11, 12, 13]}
    projection.nodes["normal"] |= {1, 2}
    d = selection.decide_node(net, "normal", projection, _linear_score(node_values), order)
    assert d["node"] == 3 and d["kept"] == [9, 13]
    assert [r["dropped"] for r in d["rounds"]] == [12, 10, 11]
    assert projection.dropped["normal"] == {10, 11, 12}


def test_nb201_candidates_include_none_and_darts_ones_do_not():
    cfg, net = _supernet("space=nb201", "supernet.layers=1")
    projection = Projection(net.kinds)
    net.alpha_map = ProjectedMap(net.alpha_map, projection)
    d = make_selection(cfg.selection).decide_op(net, "normal", projection, _linear_score(0.0), torch.Generator())
    assert "none" in d["scores"] and len(d["scores"]) == 5
    cfg, net = _supernet()
    projection = Projection(net.kinds)
    net.alpha_map = ProjectedMap(net.alpha_map, projection)
    d = make_selection(cfg.selection).decide_op(net, "normal", projection, _linear_score(0.0), torch.Generator())
    assert "none" not in d["scores"] and len(d["scores"]) == 7


SELECT = [*TINY_SYNTH, "selection=perturbation", "selection.interval=1", "search.epochs=1", "precision=fp64"]


def test_an_interrupted_selection_resumes_exactly(tmp_path):
    cfg = to_typed(compose("search", SELECT))
    whole = run_search(cfg, tmp_path / "whole")
    epochs = search_epochs(cfg, tmp_path / "cut")
    assert [next(epochs) for _ in range(3)] == [0, 1, 2]  # the search's epoch, then two tuning epochs
    with pytest.raises(Interrupted):
        epochs.throw(Interrupted(15))
    assert json.loads((tmp_path / "cut" / "result.json").read_text())["status"] == "interrupted"
    resumed = run_search(cfg, tmp_path / "cut")
    assert resumed["genotype"] == whole["genotype"] and resumed["selection"] == whole["selection"]

    def rows(folder):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (folder / "selection.jsonl").read_text().splitlines()]

    assert rows(tmp_path / "cut") == rows(tmp_path / "whole")
    for kind in ("normal", "reduce"):
        assert np.array_equal(np.load(tmp_path / "cut" / "alphas.npz")[kind],
                              np.load(tmp_path / "whole" / "alphas.npz")[kind])
    assert whole["selection"]["tuning_epochs"] == 6 and len(whole["selection"]["decisions"]) == 12


def test_the_selected_genotype_is_the_projection_and_the_argmax_one_is_recorded(tmp_path):
    result = run_search(to_typed(compose("search", SELECT)), tmp_path / "s")
    sel = result["selection"]
    chosen = {(d["kind"], d["edge"]): d["op"] for d in sel["decisions"] if d["decide"] == "op"}
    kept = {d["kind"]: d["kept"] for d in sel["decisions"] if d["decide"] == "node"}
    for kind in ("normal", "reduce"):
        edges = result["genotype"]["cells"][kind]["edges"]
        # 2 nodes: edges 0, 1 into node 2; edges 2, 3, 4 into node 3, of which two are kept
        index = {(0, 2): 0, (1, 2): 1, (0, 3): 2, (1, 3): 3, (2, 3): 4}
        assert sorted(index[(s, t)] for _, s, t in edges) == sorted([0, 1, *kept[kind]])
        assert all(op == chosen[(kind, index[(s, t)])] for op, s, t in edges)
    assert sel["argmax_genotype"]["space"] == "darts" and sel["name"] == "perturbation"
    assert json.loads((tmp_path / "s" / "genotype.json").read_text())["cells"] == result["genotype"]["cells"]


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_darts_pt_searches_then_retrains_on_digits(space, tmp_path):
    from nasrun.train.retrain import run_retrain

    layers = "supernet.layers=1" if space == "nb201" else "supernet.layers=3"
    cfg = to_typed(compose("search", ["method=darts_pt", f"space={space}", "dataset=digits", "dataset.subset=16",
                                      "search.epochs=1", "search.batch_size=32", "supernet.C=4", layers,
                                      *(["space.nodes=2"] if space == "darts" else []), "selection.interval=1",
                                      "selection.eval_images=64", "progress=false"]))
    assert (cfg.selection.name, cfg.estimator.name, cfg.method.name) == ("perturbation", "first_order", "darts_pt")
    result = run_search(cfg, tmp_path / "search")
    assert result["status"] == "completed" and result["selection"]["tuning_epochs"] == (6 if space == "darts" else 5)
    recipe = ["recipe=quick", "recipe.epochs=1", "recipe.C=4", "progress=false",
              "recipe.layers=3" if space == "darts" else "recipe.layers=1"]
    done = run_retrain(to_typed(compose("retrain", [f"genotype={tmp_path / 'search'}", *recipe])), tmp_path / "retrain")
    assert done["status"] == "completed" and 0.0 <= done["test_acc"] <= 1.0


def _nasrun(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nasrun", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def test_nasrun_select_writes_a_new_genotype_beside_the_search(tmp_path):
    from nasrun.cli.select import select

    run = tmp_path / "run"
    done = _nasrun("search", "dataset=digits", "dataset.subset=10", "search.epochs=1", "search.batch_size=32",
                   "supernet.C=2", "supernet.layers=3", "space.nodes=2", "space.ops=[none,max_pool_3x3,skip_connect]",
                   "progress=false", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    before = (run / "genotype.json").read_bytes()
    done = _nasrun("select", f"genotype={run}", "selection.interval=1", "selection.eval_images=48", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = run / "select_perturbation"
    assert (run / "genotype.json").read_bytes() == before  # the search's own genotype stays
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["selection"]["tuning_epochs"] == 6
    assert result["selection"]["argmax_genotype"]["cells"] == json.loads(before)["cells"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # the search's history, copied
    assert str(out / "genotype.json") in done.stdout
    again = _nasrun("select", f"genotype={run}", "selection.interval=1", "selection.eval_images=48", cwd=tmp_path)
    assert again.returncode == 0 and json.loads((out / "result.json").read_text()) == result  # nothing redone
    bad = _nasrun("select", f"genotype={run}", "search.lr=0.1", cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "search.lr=0.1" in bad.stderr
    for args, words in [([f"genotype={tmp_path}"], "not a finished search"),
                        ([f"genotype={run}", "selection=argmax"], "choose selection=perturbation"),
                        ([f"genotype={out}"], "ran selection=perturbation already"),
                        ([f"genotype={run}", "selection.crit=top"], "selection.crit"),
                        ([f"genotype={run}", "selection.nope=1"], "selection.nope"),
                        ([], "genotype must be given")]:
        with pytest.raises(ConfigError, match=words):
            select(args)


def test_a_selection_reports_the_benchmark_and_skips_of_its_own_genotype(tmp_path):
    import itertools
    import zlib

    from nasrun.genotype.genotype import NB201_OPS, Genotype

    def acc(arch: str) -> float:
        return (1000 + zlib.crc32(arch.encode()) % 8500) / 100

    archs = ["|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops) for ops in itertools.product(NB201_OPS, repeat=6)]
    table = tmp_path / "nb201.csv"
    table.write_text("arch,cifar10_test\n" + "".join(f"{a},{acc(a)}\n" for a in archs))
    ov = [o for o in SELECT if not o.startswith(("space.", "supernet.layers"))]
    cfg = to_typed(compose("search", [*ov, "space=nb201", "supernet.layers=1", "benchmark=nb201",
                                      f"benchmark.path={table}"]))
    result = run_search(cfg, tmp_path / "s")
    selected = Genotype.from_dict(result["genotype"])
    assert result["final"]["bench_cifar10_test"] == acc(selected.nb201)
    assert result["final"]["skip_normal"] == selected.count("skip_connect", "normal")
    argmax = Genotype.from_dict(result["selection"]["argmax_genotype"])
    last_search_row = json.loads((tmp_path / "s" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last_search_row["bench_cifar10_test"] == acc(argmax.nb201)  # the supernet's own rule, per epoch
