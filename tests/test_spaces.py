"""Every shipped space: alpha shapes, the ops of every edge, the derivation rule on hand-made alphas,
the genotype round trip, the retrain network's output, and the number of architectures."""

from __future__ import annotations

import math

import pytest
import torch

from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.genotype.genotype import Genotype, parse_nb201
from nasrun.nets import build_network, count_parameters
from nasrun.spaces.space import Space
from nasrun.supernet import SuperNet

SPACES = ["darts", "s5", "rdarts_s1", "rdarts_s2", "rdarts_s3", "rdarts_s4", "nasp", "nb201", "large"]
DARTS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
         "dil_conv_5x5"]
# R-DARTS S1 (automl/RobustDARTS src/spaces.py), edge by edge (normal | reduce)
S1 = [
    ("skip_connect dil_conv_3x3", "max_pool_3x3 avg_pool_3x3"),
    ("skip_connect dil_conv_5x5", "max_pool_3x3 dil_conv_3x3"),
    ("skip_connect dil_conv_5x5", "max_pool_3x3 avg_pool_3x3"),
    ("skip_connect sep_conv_3x3", "max_pool_3x3 avg_pool_3x3"),
    ("skip_connect dil_conv_3x3", "skip_connect dil_conv_5x5"),
    ("max_pool_3x3 skip_connect", "max_pool_3x3 avg_pool_3x3"),
    ("skip_connect sep_conv_3x3", "max_pool_3x3 sep_conv_3x3"),
    ("skip_connect sep_conv_3x3", "skip_connect dil_conv_3x3"),
    ("skip_connect dil_conv_3x3", "skip_connect dil_conv_5x5"),
    ("skip_connect sep_conv_3x3", "max_pool_3x3 avg_pool_3x3"),
    ("max_pool_3x3 skip_connect", "max_pool_3x3 avg_pool_3x3"),
    ("skip_connect dil_conv_3x3", "skip_connect dil_conv_5x5"),
    ("dil_conv_3x3 dil_conv_5x5", "skip_connect dil_conv_5x5"),
    ("dil_conv_3x3 dil_conv_5x5", "skip_connect dil_conv_5x5"),
]


def space(name: str, *more: str) -> Space:
    return Space(to_typed(compose("search", [f"space={name}", *more])).space)


def names(s: Space, kind: str) -> list[list[str]]:
    return [[s.ops[k] for k in row] for row in s.edge_ops(kind)]


@pytest.mark.smoke
def test_rdarts_s1_has_the_28_edge_lists_of_the_table():
    s = space("rdarts_s1")
    assert names(s, "normal") == [n.split() for n, _ in S1]
    assert names(s, "reduce") == [r.split() for _, r in S1]


@pytest.mark.parametrize("name,per_edge", [
    ("darts", DARTS), ("s5", DARTS[1:]), ("rdarts_s2", ["skip_connect", "sep_conv_3x3"]),
    ("rdarts_s3", ["none", "skip_connect", "sep_conv_3x3"]), ("rdarts_s4", ["noise", "sep_conv_3x3"]),
])
def test_the_same_ops_on_every_edge(name, per_edge):
    s = space(name)
    for kind in ("normal", "reduce"):
        assert names(s, kind) == [per_edge] * 14


def test_nasp_has_its_own_normal_and_reduction_ops():
    s = space("nasp")
    assert names(s, "normal")[0] == ["skip_connect", "conv_3x1_1x3", "dil_conv_3x3", "conv_1x1", "conv_3x3",
                                     "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7"]
    assert names(s, "reduce")[5] == ["skip_connect", "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7"]


@pytest.mark.parametrize("name,kinds,shape", [
    ("darts", ["normal", "reduce"], (14, 8)), ("s5", ["normal", "reduce"], (14, 7)),
    ("rdarts_s1", ["normal", "reduce"], (14, 2)), ("rdarts_s3", ["normal", "reduce"], (14, 3)),
    ("nasp", ["normal", "reduce"], None), ("nb201", ["normal"], (6, 5)),
    ("large", [f"cell{i}" for i in range(5)], (14, 10)),
])
def test_alpha_shapes(name, kinds, shape):
    s = space(name)
    torch.manual_seed(0)
    layers = 1 if name == "nb201" else 5
    net = SuperNet(4, 10, layers, in_channels=1, space=s)
    assert net.kinds == kinds
    shapes = {k: tuple(net.alphas(k).shape) for k in kinds}
    if name == "nasp":
        assert shapes == {"normal": (14, 8), "reduce": (14, 5)}
    else:
        assert set(shapes.values()) == {shape}
    out = net(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)


def _weights(s: Space, kind: str, best: dict[int, tuple[str, float]]) -> torch.Tensor:
    """Vocabulary weights 0.1 on every op an edge has, with a chosen op raised on some edges."""
    w = torch.zeros(s.num_edges, len(s.ops))
    for e, row in enumerate(s.edge_ops(kind)):
        w[e, row] = 0.1
    for e, (op, value) in best.items():
        w[e, s.ops.index(op)] = value
    return w


def test_top_k_keeps_the_two_strongest_edges_by_their_best_other_op():
    s = space("rdarts_s3")  # none, skip_connect, sep_conv_3x3 on every edge
    # node 1 (state 3) has edges 2, 3, 4: edge 4 strongest through sep_conv, edge 2 by skip; edge 3's none is ignored
    w = _weights(s, "normal", {2: ("skip_connect", 0.5), 3: ("none", 0.9), 4: ("sep_conv_3x3", 0.7)})
    g = s.derive({"normal": w, "reduce": _weights(s, "reduce", {})}, None, layers=5)
    assert g.cells["normal"].inputs_of(3) == [("sep_conv_3x3", 2), ("skip_connect", 0)]
    assert all(op != "none" for op, _, _ in g.cells["normal"].edges)
    assert len(g.cells["normal"].edges) == 8 and g.cells["normal"].concat == (2, 3, 4, 5)


@pytest.mark.smoke
def test_argmax_keeps_every_edge_none_included():
    s = space("nb201")
    w = _weights(s, "normal", {0: ("nor_conv_3x3", 0.5), 2: ("none", 0.5), 5: ("skip_connect", 0.3)})
    g = s.derive({"normal": w}, None, layers=5)
    assert g.nb201 == "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
    assert g == parse_nb201(g.nb201)


def test_searched_edges_keep_what_beats_none_and_at_least_one_per_node():
    s = space("large", "space.nodes=2")  # 5 edges: node 2 <- 0, 1; node 3 <- 0, 1, 2
    w = torch.zeros(5, len(s.ops))
    w[:, 0] = 0.5  # none
    w[0, s.ops.index("sep_conv_7x7")] = 0.6   # beats none: kept
    w[1, s.ops.index("skip_connect")] = 0.4   # does not
    w[2, s.ops.index("max_pool_3x3")] = 0.45  # node 3: nothing beats none, the strongest edge stays
    w[3, s.ops.index("dil_conv_5x5")] = 0.2
    g = s.derive({f"cell{i}": w for i in range(3)}, None, layers=3)
    assert g.cells["cell0"].edges == (("sep_conv_7x7", 0, 2), ("max_pool_3x3", 0, 3))
    assert not g.shared and [g.cells[f"cell{i}"].reduction for i in range(3)] == [False, True, True]


@pytest.mark.parametrize("name", SPACES)
def test_genotype_round_trip_and_retrain_network(name, tmp_path):
    s = space(name)
    torch.manual_seed(1)
    layers = 1 if name == "nb201" else 3
    net = SuperNet(4, 10, layers, in_channels=1, space=s)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    g = net.genotype()
    assert g.space == name and g.space_hash == s.hash()
    path = g.save(tmp_path / "genotype.json")
    assert Genotype.load(path) == g
    model = build_network(g, 4, 10, layers, False, in_channels=1, input_size=8)
    logits, aux = model(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 10) and aux is None and count_parameters(model) > 0


@pytest.mark.parametrize("name,size", [
    ("darts", (3 * 6 * 10 * 49**4) ** 2),   # 1·3·6·10 edge pairs x 7^8 ops = 1,037,664,180 per cell
    ("s5", (3 * 6 * 10 * 49**4) ** 2),       # no none: the same 7 choices per kept edge
    ("rdarts_s2", (3 * 6 * 10 * 2**8) ** 2),  # two ops per edge
    ("nb201", 5**6),
])
def test_number_of_architectures(name, size):
    assert space(name).size(8) == size


def test_large_counts_every_non_empty_edge_set_of_every_cell():
    s = space("large")  # per node with n incoming edges: (9 + 1)^n - 1 (each edge absent or one of 9 ops)
    per_cell = math.prod(10 ** (2 + i) - 1 for i in range(4))
    assert s.size(8) == per_cell**8


@pytest.mark.parametrize("overrides,key", [
    (["method=pdarts", "space=rdarts_s1"], "schedule.stage_keep"),
    (["method=pdarts", "space=nb201"], "schedule.max_skips"),
    (["method=pdarts", "space=large", "schedule.max_skips=null"], "schedule"),
    (["space=rdarts_s1", "space.nodes=3"], "space.edge_ops.normal"),
    (["space=nb201", "space.cells=independent"], "space.cells"),
    (["space=darts", "space.inputs=1"], "space.inputs"),
    (["space=darts", "supernet.layers=2"], "supernet.layers"),
    (["space=darts", "space.derivation=best"], "space.derivation"),
])
def test_combinations_that_cannot_make_sense_are_refused_before_any_work(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_typed(compose("search", overrides))


def test_a_resumed_search_with_the_noise_op_draws_the_same_noise(tmp_path):
    import numpy as np

    from nasrun.run.signals import Interrupted
    from nasrun.search.loop import run_search

    cfg = to_typed(compose("search", ["space=rdarts_s4", "dataset=digits", "dataset.subset=16", "search.epochs=2",
                                      "search.batch_size=32", "supernet.C=4", "supernet.layers=3", "space.nodes=2",
                                      "progress=false"]))
    run_search(cfg, tmp_path / "whole")

    def stop(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise Interrupted(15)

    with pytest.raises(Interrupted):
        run_search(cfg, tmp_path / "cut", stop)
    run_search(cfg, tmp_path / "cut")
    whole, cut = np.load(tmp_path / "whole" / "alphas.npz"), np.load(tmp_path / "cut" / "alphas.npz")
    assert np.array_equal(whole["normal"], cut["normal"]) and np.array_equal(whole["reduce"], cut["reduce"])
    assert "noise" in list(whole["ops"])
