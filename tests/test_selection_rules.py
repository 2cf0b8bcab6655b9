"""The released genotype rules of GDAS and FairDARTS (``selection.rule``), the genotype format /4 that holds
their cells, the networks that retrain them, and reading a finished search again by another rule.

The references below are the authors' parsers written out here:

- GDAS, D-X-Y/AutoDL-Projects ``xautodl/models/cell_searchs/search_model_gdas_nasnet.py`` ``genotype()``:
  per node, every (op name, input j, weight) over the inputs in order and the non-``none`` ops in vocabulary
  order, sorted by ``-weight`` (a stable sort), the first two kept.
- FairDARTS, xiaomi-automl/FairDARTS ``fairdarts/utils.py`` ``parse(..., 'threshold_sparse', 0.85)``: per node,
  the two inputs whose largest weight is largest (stable sort), each with its best op (strict ``>``: ties keep
  the first) only when that weight is ``>= 0.85``; ``fairdarts/model.py`` ``DCOCell`` skips an edge whose input
  is a node no edge feeds, and outputs the nodes that have a state.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError, GenotypeError
from nasrun.genotype.genotype import PUBLISHED, Cell, Genotype
from nasrun.nets.cifar import NetworkCIFAR
from nasrun.search.loop import run_search
from nasrun.spaces.rules import EmptyCell, pairs_cell, read_by_rule, threshold_cell
from nasrun.spaces.space import Space

DARTS = Space(to_typed(compose("search", [])).space)
OPS = DARTS.ops


def _gdas_parse(w: list[list[float]], nodes: int) -> list[tuple[str, int, int]]:
    gene, start = [], 0
    for i in range(nodes):
        pairs = []
        for j in range(2 + i):
            for k, name in enumerate(OPS):
                if name != "none":
                    pairs.append((name, j, w[start + j][k]))
        pairs = sorted(pairs, key=lambda x: -x[-1])
        gene += [(name, j, 2 + i) for name, j, _ in pairs[:2]]
        start += 2 + i
    return gene


def _fairdarts_parse(w: list[list[float]], nodes: int, threshold: float) -> list[tuple[str, int, int]]:
    gene, start, n = [], 0, 2
    for i in range(nodes):
        W = w[start:start + n]
        edges = sorted(range(i + 2), key=lambda x: -max(W[x][k] for k in range(len(W[x])) if OPS[k] != "none"))[:2]
        for j in edges:
            k_best = None
            for k in range(len(W[j])):
                if OPS[k] != "none" and (k_best is None or W[j][k] > W[j][k_best]):
                    k_best = k
            if W[j][k_best] >= threshold:
                gene.append((OPS[k_best], i + 2, j))
        start += n
        n += 1
    return gene


def _dco_states(gene: list[tuple[str, int, int]]) -> tuple[list[tuple[str, int, int]], tuple[int, ...]]:
    """DCOCell: the edges that run (their input has a state) and the nodes it outputs."""
    states, used = {0, 1}, []
    for to in sorted({t for _, t, _ in gene}):
        runs = [(op, j, to) for op, t, j in gene if t == to and j in states]
        if runs:
            states.add(to)
            used += runs
    return used, tuple(sorted(states - {0, 1}))


def _rows(rng: random.Random, ties: bool) -> list[list[float]]:
    pick = (lambda: rng.choice([0.1, 0.2, 0.5, 0.9])) if ties else rng.random
    return [[pick() for _ in OPS] for _ in range(DARTS.num_edges)]


@pytest.mark.parametrize("ties", [False, True])
def test_pairs_are_gdas_top_two_op_input_pairs(ties):
    rng, shared = random.Random(3 + ties), 0
    for _ in range(200):
        rows = _rows(rng, ties)
        got = pairs_cell(DARTS, rows, DARTS.edge_ops("normal"), 2)
        assert got == _gdas_parse(rows, DARTS.nodes)
        shared += sum(got[2 * i][1] == got[2 * i + 1][1] for i in range(DARTS.nodes))
    assert shared > 0  # two ops on one input happen, and the format holds them


@pytest.mark.parametrize("ties", [False, True])
def test_threshold_is_fairdarts_sparse_threshold_with_isolated_nodes_left_out(ties):
    rng, unfed = random.Random(7 + ties), 0
    for _ in range(300):
        rows = [[v ** 0.5 for v in row] for row in _rows(rng, ties)]  # gates near 1 as often as not
        edges, concat = threshold_cell(DARTS, rows, DARTS.edge_ops("normal"), 2, 0.85)
        used, outputs = _dco_states(_fairdarts_parse(rows, DARTS.nodes, 0.85))
        assert sorted(edges) == sorted((op, j, to) for op, j, to in used) and concat == outputs
        unfed += DARTS.nodes - len(concat)
    assert unfed > 0


def test_an_unfed_node_and_the_edge_it_would_feed():
    rows = [[0.0] * len(OPS) for _ in range(DARTS.num_edges)]
    sep = OPS.index("sep_conv_3x3")
    # edges 0, 1 feed node 2 (from 0, 1); 2-4 node 3; 5-8 node 4 (from 0..3); 9-13 node 5 (from 0..4)
    for e, v in {0: 0.9, 1: 0.5, 2: 0.2, 3: 0.3, 4: 0.1, 5: 0.95, 8: 0.99, 12: 0.97, 13: 0.9}.items():
        rows[e][sep] = v
    edges, concat = threshold_cell(DARTS, rows, DARTS.edge_ops("normal"), 2, 0.85)
    # node 2 keeps input 0 (0.5 is below the threshold); node 3 keeps nothing; nodes 4 and 5 rank their edge
    # from node 3 first, and it is dropped: node 3 has no state
    assert edges == [("sep_conv_3x3", 0, 2), ("sep_conv_3x3", 0, 4), ("sep_conv_3x3", 4, 5)]
    assert concat == (2, 4, 5)
    g = Genotype(space="darts", ops=OPS, cells={"normal": Cell(tuple(edges), concat, False),
                                              "reduce": Cell(tuple(edges), concat, True)}, rule="threshold")
    assert Genotype.from_dict(json.loads(g.to_json())) == g and g.to_dict()["format"] == "nasrun.genotype/4"
    net = NetworkCIFAR(g, C=4, num_classes=3, layers=3, auxiliary=False, in_channels=1)
    logits, _ = net(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 3) and net.cells[0].multiplier == 3


def test_read_by_rule_on_the_supernet_weights_and_an_empty_cell():
    torch.manual_seed(0)
    w = {k: torch.rand(DARTS.num_edges, len(OPS)) for k in ("normal", "reduce")}
    g = read_by_rule(DARTS, w, None, 8, "pairs")
    assert g.rule == "pairs" and list(g.cells["normal"].edges) == _gdas_parse(w["normal"].tolist(), 4)
    assert read_by_rule(DARTS, w, None, 8, "space") == DARTS.derive(w, None, 8)
    with pytest.raises(EmptyCell, match=r"no edge of the normal cell: no op's weight reaches 1.1 \(the strongest is"):
        read_by_rule(DARTS, w, None, 8, "threshold", 1.1)
    nb201 = Space(to_typed(compose("search", ["space=nb201"])).space)
    with pytest.raises(ValueError, match="rule pairs reads cells whose nodes keep k inputs"):
        read_by_rule(nb201, {"normal": torch.rand(6, 5)}, None, 1, "pairs")


def _payload(rule: str, normal: list, concat=(2, 3, 4, 5)) -> dict:
    d = PUBLISHED["DARTS_V2"].to_dict()
    d["rule"] = rule
    d["cells"]["normal"] = {"edges": normal, "concat": list(concat), "reduction": False}
    return d


SHARED = [["sep_conv_3x3", 0, 2], ["skip_connect", 0, 2], ["sep_conv_3x3", 1, 3], ["sep_conv_3x3", 0, 3],
          ["sep_conv_3x3", 2, 4], ["dil_conv_3x3", 2, 4], ["sep_conv_3x3", 0, 5], ["sep_conv_3x3", 1, 5]]


@pytest.mark.parametrize("rule,normal,concat,message", [
    ("space", SHARED, (2, 3, 4, 5), r"cells\.normal\.edges\[1\]: a second edge from state 0 to node 2; .* rule pairs"),
    ("pairs", SHARED[:1] + SHARED[:1] + SHARED[2:], (2, 3, 4, 5),
     r"edges\[1\]: a second sep_conv_3x3 edge from state 0 to node 2; the pairs rule keeps each"),
    ("pairs", SHARED[:1] + SHARED[2:], (2, 3, 4, 5), r"cells\.normal\.edges: node 2 has 1 \(op, input\) pair; .*exactly 2"),
    ("pairs", SHARED[2:], (2, 3, 4, 5), r"cells\.normal\.edges: node 2 has no incoming edge"),
    ("threshold", SHARED[2:4] + [["sep_conv_3x3", 2, 4]], (3, 4), r"edges\[2\]: source 2 is a node with no incoming"),
    ("threshold", SHARED[2:4], (2, 3), r"cells\.normal\.concat: node 2 has no incoming edge, so the cell cannot"),
    ("threshold", SHARED[2:4] + [["skip_connect", 0, 4], ["skip_connect", 1, 4], ["skip_connect", 3, 4]], (3, 4),
     r"node 4 has 3 inputs; the threshold rule keeps at most 2"),
    ("sharp", SHARED, (2, 3, 4, 5), r"rule: expected one of space, pairs, threshold, got 'sharp'"),
])
def test_a_genotype_file_breaking_its_rule_is_refused_naming_the_field(rule, normal, concat, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_dict(_payload(rule, normal, concat))


def test_format_4_reads_what_its_rule_allows_and_earlier_formats_still_load():
    pairs = Genotype.from_dict(_payload("pairs", SHARED))
    assert pairs.rule == "pairs" and pairs.count("skip_connect") == 1
    threshold = Genotype.from_dict(_payload("threshold", SHARED[2:4] + [["skip_connect", 3, 4]], (3, 4)))
    assert threshold.cells["normal"].concat == (3, 4)
    v3 = {k: v for k, v in PUBLISHED["DARTS_V2"].to_dict().items() if k != "rule"}
    assert Genotype.from_dict({**v3, "format": "nasrun.genotype/3"}) == PUBLISHED["DARTS_V2"]
    with pytest.raises(GenotypeError, match=r"unknown key\(s\) 'rule'.*rule needs format 'nasrun.genotype/4'"):
        Genotype.from_dict({**v3, "format": "nasrun.genotype/3", "rule": "pairs"})
    nb201 = to_typed(compose("search", ["space=nb201"]))
    d = Space(nb201.space).derive({"normal": torch.rand(6, 5)}, None, 1).to_dict()
    with pytest.raises(GenotypeError, match="rule: pairs reads two-input"):
        Genotype.from_dict({**d, "rule": "pairs"})
    net = NetworkCIFAR(pairs, C=4, num_classes=3, layers=3, auxiliary=False, in_channels=1)
    assert net(torch.randn(2, 1, 8, 8))[0].shape == (2, 3)
    assert sum(1 for op in net.cells[0].ops) == 8  # two ops on state 0 into node 2: both built


def test_the_rule_is_refused_where_it_cannot_read_the_cells():
    for overrides, words in [(["space=nb201", "selection.rule=pairs"], "selection.rule='pairs' is not allowed: space "
                              "for space=nb201"),
                             (["space=large", "selection.rule=threshold"], "derives by searched"),
                             (["method=pdarts", "selection.rule=pairs"], "schedule.max_skips"),
                             (["selection=perturbation", "selection.rule=pairs"], "space with selection=perturbation"),
                             (["selection.threshold=0"], r"selection.threshold=0.0 is not allowed: must be a number in"),
                             (["selection.rule=top"], "one of space, pairs, threshold")]:
        with pytest.raises(ConfigError, match=words):
            to_typed(compose("search", overrides))
    assert to_typed(compose("search", ["method=gdas"])).selection.rule == "pairs"
    assert to_typed(compose("search", ["method=gdas", "space=nb201"])).selection.rule == "space"
    assert to_typed(compose("search", ["method=fairdarts"])).selection.rule == "threshold"
    assert to_typed(compose("search", ["method=fairdarts", "selection=perturbation"])).selection.rule == "space"


TINY_DIGITS = ["dataset=digits", "dataset.subset=16", "search.epochs=2", "search.batch_size=32", "supernet.C=4",
               "space.nodes=2", "supernet.layers=3", "progress=false"]


def test_gdas_search_writes_its_pairs_genotype_and_keeps_the_space_rules(tmp_path):
    result = run_search(to_typed(compose("search", ["method=gdas", *TINY_DIGITS])), tmp_path / "g")
    saved = Genotype.load(tmp_path / "g" / "genotype.json")
    assert saved.rule == "pairs" and result["selection"]["rule"] == "pairs"
    space_rule = Genotype.from_dict(result["selection"]["space_genotype"])
    rows = [json.loads(x) for x in (tmp_path / "g" / "genotypes.jsonl").read_text().splitlines()]
    assert Genotype.from_dict(rows[-1]["genotype"]) == space_rule  # the history reads by the space's rule
    assert result["final"]["skip_normal"] == saved.count("skip_connect", "normal")
    ckpt = torch.load(tmp_path / "g" / "checkpoint.pt", weights_only=True)
    net = to_typed(compose("search", ["method=gdas", *TINY_DIGITS]))
    from nasrun.search.state import build_supernet

    model = build_supernet(net, 10, 1, 3)
    model.load_state_dict(ckpt["model"])
    with torch.no_grad():
        w = model.vocabulary_weights()
    for kind in ("normal", "reduce"):
        expected = pairs_cell(model.space, w[kind].double().tolist(), model.edge_ops[kind], 2)
        assert list(saved.cells[kind].edges) == expected


def test_a_threshold_no_op_reaches_fails_with_the_command_that_reads_it_again(tmp_path):
    from nasrun.cli.select import select

    run = tmp_path / "f"
    with pytest.raises(EmptyCell, match=r"selection.threshold=0.85: .*`nasrun select genotype=.* selection.threshold="):
        run_search(to_typed(compose("search", ["method=fairdarts", *TINY_DIGITS])), run)
    failed = json.loads((run / "result.json").read_text())
    assert failed["status"] == "failed" and failed["reason"].startswith("selection.threshold=0.85")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ["method=fairdarts", *TINY_DIGITS]))
    select([f"genotype={run}", "selection.threshold=0.5"])
    out = run / "select_threshold_0.5"
    result = json.loads((out / "result.json").read_text())
    g = Genotype.load(out / "genotype.json")
    assert result["status"] == "completed" and g.rule == "threshold" and result["selection"]["threshold"] == 0.5
    assert all(len(g.cells[k].inputs_of(n)) <= 2 for k in g.cells for n in (2, 3))
    again = run / "select_space"
    select([f"genotype={run}", "selection.rule=space"])
    assert Genotype.load(again / "genotype.json") == Genotype.from_dict(result["selection"]["space_genotype"])
    with pytest.raises(ConfigError, match="that reading already"):
        select([f"genotype={run}", "selection.rule=threshold"])  # 0.85, the search's own
