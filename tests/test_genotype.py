"""Genotype derivation, JSON round trip and validation, published cells, resolving genotype= values."""

import json

import pytest
import torch

from nasrun.errors import GenotypeError
from nasrun.genotype import FORMAT, PUBLISHED, Genotype, derive, resolve_genotype
from nasrun.spaces import DARTS_OPS

OPS = list(DARTS_OPS)
IDX = {op: k for k, op in enumerate(OPS)}


def weights_for(spec, fill=0.01):
    """14 x 8 weights: spec maps edge -> {op: weight}; everything else gets `fill`."""
    w = torch.full((14, 8), fill)
    for e, ops in spec.items():
        for op, v in ops.items():
            w[e, IDX[op]] = v
    return w


def test_derivation_known_answer():
    # node 0: edges 0 (src 0), 1 (src 1); node 1: 2..4; node 2: 5..8; node 3: 9..13
    wn = weights_for({
        0: {"sep_conv_3x3": 0.2},
        1: {"none": 0.9, "skip_connect": 0.5},   # none ignored: strength 0.5 -> first
        2: {"dil_conv_5x5": 0.3},
        3: {"max_pool_3x3": 0.1},
        4: {"sep_conv_5x5": 0.4},                # node 1: src 2 then src 0
        5: {"avg_pool_3x3": 0.3},
        6: {"sep_conv_3x3": 0.3},                # tie on strength: src 0 before src 1
        7: {"skip_connect": 0.1},
        8: {"none": 0.8},
        9: {"dil_conv_3x3": 0.25, "sep_conv_5x5": 0.25},  # op tie: lower index (sep_conv_5x5) wins
        13: {"max_pool_3x3": 0.6},
    })
    wr = weights_for({})  # everything tied: first two sources, first non-none op
    g = derive(wn, wr, OPS)
    assert g.normal == (
        ("skip_connect", 1), ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 2), ("dil_conv_5x5", 0),
        ("avg_pool_3x3", 0), ("sep_conv_3x3", 1),
        ("max_pool_3x3", 4), ("sep_conv_5x5", 0),
    )
    assert g.reduce == tuple(("max_pool_3x3", j) for _ in range(4) for j in (0, 1))
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
    assert g.ops == DARTS_OPS and g.nodes == 4


def test_derivation_without_none_and_other_nodes():
    ops = OPS[1:]
    w = torch.zeros(5, 7)  # 2 nodes: 2 + 3 edges
    w[0, 3] = w[1, 0] = 1.0
    w[4, 6] = 2.0
    w[3, 2] = 1.0
    g = derive(w, w, ops, nodes=2, space="s5")
    assert g.normal == (("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("dil_conv_5x5", 2), ("skip_connect", 1))
    assert g.normal_concat == (2, 3) and g.space == "s5"


def test_derive_rejects_bad_weights():
    with pytest.raises(ValueError, match="shape"):
        derive(torch.zeros(13, 8), torch.zeros(14, 8), OPS)
    bad = torch.zeros(14, 8)
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        derive(bad, torch.zeros(14, 8), OPS)


def test_json_round_trip(tmp_path):
    g = PUBLISHED["PDARTS"]
    d = g.to_dict()
    assert d == json.loads(json.dumps(d))
    assert list(d) == ["format", "space", "ops", "nodes", "normal", "normal_concat", "reduce", "reduce_concat", "cells"]
    assert d["format"] == FORMAT and d["cells"] is None
    assert Genotype.from_dict(d) == g
    path = tmp_path / "genotype.json"
    g.save(path)
    assert Genotype.load(path) == g
    assert json.loads(path.read_text()) == d
    assert [p.name for p in tmp_path.iterdir()] == ["genotype.json"]  # no temp file left
    # list input is normalised to tuples and stays hashable
    assert hash(Genotype.from_dict(json.loads(json.dumps(d)))) == hash(g)


def _write(tmp_path, text):
    path = tmp_path / "genotype.json"
    path.write_text(text)
    return path


def _broken(**changes):
    d = PUBLISHED["DARTS_V2"].to_dict()
    for k, v in changes.items():
        if v is KeyError:
            del d[k]
        else:
            d[k] = v
    return d


def _pairs(cell, k, value):
    pairs = [list(p) for p in PUBLISHED["DARTS_V2"].to_dict()[cell]]
    pairs[k] = value
    return pairs


BROKEN = [
    (_broken(normal=_pairs("normal", 3, ["sep_conv_9x9", 1])), r"normal\[3\]: op 'sep_conv_9x9' is not in ops \["),
    (_broken(normal=_pairs("normal", 3, ["none", 1])), r"normal\[3\]: op 'none' cannot be used"),
    (_broken(reduce=_pairs("reduce", 2, ["skip_connect", 4])), r"reduce\[2\]: input 4 is out of range for node 1 .*0\.\.2"),
    (_broken(reduce=_pairs("reduce", 2, ["skip_connect", -1])), r"reduce\[2\]: input -1 is out of range"),
    (_broken(normal=_pairs("normal", 0, ["sep_conv_3x3"])), r"normal\[0\]: expected \[op, input\]"),
    (_broken(normal=_pairs("normal", 0, ["sep_conv_3x3", 1.0])), r"normal\[0\]: expected \[op, input\]"),
    (_broken(normal=_pairs("normal", 0, ["sep_conv_3x3", True])), r"normal\[0\]: expected \[op, input\]"),
    (_broken(normal=PUBLISHED["DARTS_V2"].to_dict()["normal"][:7]), r"normal: expected 8 entries .*got 7"),
    (_broken(normal_concat=[2, 3, 4, 6]), r"normal_concat\[3\]: expected a state index in 0\.\.5, got 6"),
    (_broken(reduce_concat=[]), r"reduce_concat: expected a non-empty list"),
    (_broken(reduce_concat=[2, 2]), r"reduce_concat: state indices must be distinct"),
    (_broken(format="nasrun.genotype/9"), r"format: expected 'nasrun.genotype/1', got 'nasrun.genotype/9'"),
    (_broken(format=KeyError), r"missing key\(s\) 'format'"),
    (_broken(reduce=KeyError), r"missing key\(s\) 'reduce'"),
    (_broken(normal_conact=[2, 3]), r"unknown key\(s\) 'normal_conact'"),
    (_broken(ops=OPS + ["warp_drive"]), r"ops\[8\]: unknown op 'warp_drive'"),
    (_broken(ops=OPS + ["none"]), r"ops: op names must be distinct, repeated: none"),
    (_broken(nodes="4"), r"nodes: expected an integer >= 1, got '4'"),
    (_broken(space=3), r"space: expected a non-empty string"),
    (_broken(cells=[]), r"cells: per-cell genotypes are not supported"),
    ([1, 2], r"expected a JSON object"),
]


@pytest.mark.parametrize("payload,message", BROKEN)
def test_broken_files_give_precise_errors(tmp_path, payload, message):
    path = _write(tmp_path, json.dumps(payload))
    with pytest.raises(GenotypeError, match=message) as info:
        Genotype.load(path)
    assert str(info.value).startswith(f"{path}: ")


def test_invalid_json_reports_line_and_column(tmp_path):
    path = _write(tmp_path, '{\n  "format": "nasrun.genotype/1",\n  "normal": [,]\n}')
    with pytest.raises(GenotypeError, match=r"not valid JSON: .* at line 3, column 14"):
        Genotype.load(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(GenotypeError, match="no such file"):
        Genotype.load(tmp_path / "nope.json")
    with pytest.raises(GenotypeError, match="is a folder"):
        Genotype.load(tmp_path)


def test_python_literal_is_not_evaluated(tmp_path):
    path = _write(tmp_path, "Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=range(2, 6))")
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.load(path)


def test_optional_fields_default_and_repeated_sources_allowed():
    d = PUBLISHED["DARTS_V2"].to_dict()
    for k in ("space", "ops", "nodes", "cells"):
        del d[k]
    d["normal"][0] = ["sep_conv_3x3", 1]  # same source twice in node 0: allowed
    g = Genotype.from_dict(d)
    assert g.space == "darts" and g.ops == DARTS_OPS and g.nodes == 4


def test_direct_construction_is_validated():
    with pytest.raises(GenotypeError, match=r"Genotype: normal\[0\]: op 'bogus'"):
        Genotype(normal=(("bogus", 0),) * 8, normal_concat=(2, 3, 4, 5),
                 reduce=PUBLISHED["DARTS"].reduce, reduce_concat=(2, 3, 4, 5))


@pytest.mark.parametrize("name,skips", [
    ("DARTS_V1", 3), ("DARTS_V2", 2), ("DARTS", 2), ("PDARTS", 2),
    ("PC_DARTS_cifar", 1), ("PCDARTS", 1), ("PC_DARTS_image", 2),
])
def test_published_skip_counts(name, skips):
    assert PUBLISHED[name].count("skip_connect", "normal") == skips


def test_published_aliases_and_reduce_cells():
    assert PUBLISHED["DARTS"] == PUBLISHED["DARTS_V2"]
    assert PUBLISHED["PCDARTS"] == PUBLISHED["PC_DARTS_cifar"]
    for name in ("DARTS_V1", "DARTS_V2"):
        g = PUBLISHED[name]
        assert g.count_parameter_free("reduce") == 8
    assert PUBLISHED["DARTS_V2"].count_parameter_free("normal") == 2
    assert PUBLISHED["DARTS_V2"].count("max_pool_3x3", "reduce") == 5
    with pytest.raises(ValueError):
        PUBLISHED["DARTS"].count("skip_connect", "middle")


def test_str_is_compact():
    text = str(PUBLISHED["DARTS_V2"])
    assert "normal:" in text and "reduce:" in text and "2=sep_conv_3x3(0)+sep_conv_3x3(1)" in text
    assert len(text.splitlines()) == 3


# ------------------------------------------------------------ resolve_genotype
def test_resolve_published_name():
    assert resolve_genotype("DARTS_V2") == (PUBLISHED["DARTS_V2"], None)
    assert resolve_genotype("pcdarts") == (PUBLISHED["PCDARTS"], None)


def test_resolve_file_and_run_folder(tmp_path):
    loose = tmp_path / "mine.json"
    PUBLISHED["PDARTS"].save(loose)
    assert resolve_genotype(str(loose)) == (PUBLISHED["PDARTS"], None)

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    PUBLISHED["DARTS_V1"].save(run / "genotype.json")
    assert resolve_genotype(str(run)) == (PUBLISHED["DARTS_V1"], run)
    assert resolve_genotype(str(run / "genotype.json")) == (PUBLISHED["DARTS_V1"], run)


def test_resolve_unfinished_run(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(GenotypeError, match="did not finish .*still running or was interrupted"):
        resolve_genotype(str(run))
    (run / "result.json").write_text(json.dumps({"status": "failed", "reason": "NaN loss at epoch 3"}))
    with pytest.raises(GenotypeError, match=r"did not finish \(result.json status: failed \(NaN loss at epoch 3\)\)"):
        resolve_genotype(str(run))
    with pytest.raises(GenotypeError, match="not a search run folder"):
        resolve_genotype(str(tmp_path))


def test_resolve_bad_values(tmp_path):
    with pytest.raises(GenotypeError, match=r"genotype='DARTS_V3': not a published genotype name; expected .*DARTS_V2.*PC_DARTS_image.*a genotype.json file or a search run folder"):
        resolve_genotype("DARTS_V3")
    with pytest.raises(GenotypeError, match="no such file or folder"):
        resolve_genotype(str(tmp_path / "missing" / "genotype.json"))
    broken = _write(tmp_path, "{}")
    with pytest.raises(GenotypeError, match="missing key"):
        resolve_genotype(str(broken))
