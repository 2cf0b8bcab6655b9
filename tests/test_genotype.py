"""Genotype derivation, JSON round trip and validation, published cells, resolving genotype= values."""

import json
import os
import re
import time
from pathlib import Path

import pytest
import torch

import nasrun.conf
from nasrun.errors import GenotypeError
from nasrun.genotype.genotype import FORMAT, FORMAT_V1, PUBLISHED, Genotype, known_spaces, resolve_genotype
from nasrun.nets.cifar import NetworkCIFAR
from nasrun.spaces import DARTS_OPS
from nasrun.spaces.space import derive

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
    assert list(d) == ["format", "space", "space_hash", "ops", "nodes", "inputs", "cells", "nb201", "space_description",
                       "rule"]
    assert d["format"] == FORMAT == "nasrun.genotype/4" and d["nb201"] is None and d["space_description"] is None
    assert d["rule"] == "space"
    assert list(d["cells"]) == ["normal", "reduce"]
    assert d["cells"]["normal"] == {"edges": [[op, src, 2 + k // 2] for k, (op, src) in enumerate(g.normal)],
                                    "concat": [2, 3, 4, 5], "reduction": False}
    assert d["cells"]["reduce"]["reduction"] is True
    assert Genotype.from_dict(d) == g
    path = tmp_path / "genotype.json"
    g.save(path)
    assert Genotype.load(path) == g
    assert json.loads(path.read_text()) == d
    assert [p.name for p in tmp_path.iterdir()] == ["genotype.json"]  # no temp file left
    # list input is normalised to tuples and stays hashable
    assert hash(Genotype.from_dict(json.loads(json.dumps(d)))) == hash(g)


def test_format_v1_files_still_load(tmp_path):
    g = PUBLISHED["PDARTS"]
    d = _v1(g)
    assert d["format"] == FORMAT_V1 == "nasrun.genotype/1"
    assert Genotype.from_dict(d) == g
    path = _write(tmp_path, json.dumps(d))
    assert Genotype.load(path) == g
    assert hash(Genotype.load(path)) == hash(g)


def _v1(g):
    """A genotype as a ``nasrun.genotype/1`` file: shared cells as ``[op, input]`` pairs."""
    return {"format": FORMAT_V1, "space": g.space, "ops": list(g.ops), "nodes": g.nodes,
            "normal": [list(p) for p in g.normal], "normal_concat": list(g.normal_concat),
            "reduce": [list(p) for p in g.reduce], "reduce_concat": list(g.reduce_concat), "cells": None}


def _write(tmp_path, text):
    path = tmp_path / "genotype.json"
    path.write_text(text)
    return path


def _broken(**changes):
    """A format-/1 payload of DARTS_V2 with fields changed (KeyError deletes one)."""
    d = _v1(PUBLISHED["DARTS_V2"])
    for k, v in changes.items():
        if v is KeyError:
            del d[k]
        else:
            d[k] = v
    return d


def _pairs(cell, k, value):
    pairs = [list(p) for p in _v1(PUBLISHED["DARTS_V2"])[cell]]
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
    (_broken(normal=_v1(PUBLISHED["DARTS_V2"])["normal"][:7]), r"normal: expected 8 entries .*got 7"),
    (_broken(normal_concat=[2, 3, 4, 6]), r"normal_concat\[3\]: expected a state index in 0\.\.5, got 6"),
    (_broken(reduce_concat=[]), r"reduce_concat: expected a non-empty list"),
    (_broken(reduce_concat=[2, 2]), r"reduce_concat: state indices must be distinct"),
    (_broken(format="nasrun.genotype/9"), r"format: expected 'nasrun.genotype/4' \(or the earlier "
     r"'nasrun.genotype/3', 'nasrun.genotype/2', 'nasrun.genotype/1'\), got 'nasrun.genotype/9'"),
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


def _broken_v2(**changes):
    """A format-/2 payload of DARTS_V2 with top-level fields changed (KeyError deletes one)."""
    d = PUBLISHED["DARTS_V2"].to_dict()
    for k, v in changes.items():
        if v is KeyError:
            del d[k]
        else:
            d[k] = v
    return d


def _edge(cell, k, value):
    d = PUBLISHED["DARTS_V2"].to_dict()
    d["cells"][cell]["edges"][k] = value
    return d


def _cell_field(cell, key, value):
    d = PUBLISHED["DARTS_V2"].to_dict()
    d["cells"][cell][key] = value
    return d


BROKEN_V2 = [
    (_edge("normal", 3, ["sep_conv_9x9", 1, 3]), r"cells\.normal\.edges\[3\]: op 'sep_conv_9x9' is not in ops"),
    (_edge("normal", 3, ["none", 1, 3]), r"cells\.normal\.edges\[3\]: op 'none' is not an edge of a DARTS cell"),
    (_edge("reduce", 2, ["skip_connect", 4, 3]),
     r"cells\.reduce\.edges\[2\]: source 4 must be an earlier state than the target 3 \(0\.\.2\)"),
    (_edge("reduce", 2, ["skip_connect", -1, 3]), r"cells\.reduce\.edges\[2\]: source -1 must be an earlier state"),
    (_edge("normal", 0, ["sep_conv_3x3", 0]), r"cells\.normal\.edges\[0\]: expected \[op, source, target\]"),
    (_edge("normal", 0, ["sep_conv_3x3", 1.0, 2]), r"cells\.normal\.edges\[0\]: expected \[op, source, target\]"),
    (_edge("normal", 0, ["sep_conv_3x3", True, 2]), r"cells\.normal\.edges\[0\]: expected \[op, source, target\]"),
    (_edge("normal", 0, ["sep_conv_3x3", 0, 6]), r"cells\.normal\.edges\[0\]: target 6 is not a node: allowed 2\.\.5"),
    (_cell_field("normal", "edges", [e for e in PUBLISHED["DARTS_V2"].to_dict()["cells"]["normal"]["edges"]
                                     if e[2] != 4]), r"cells\.normal\.edges: node 4 has no incoming edge"),
    (_cell_field("normal", "concat", [2, 3, 4, 6]), r"cells\.normal\.concat\[3\]: expected a state index in 0\.\.5, got 6"),
    (_cell_field("reduce", "concat", []), r"cells\.reduce\.concat: expected a non-empty list"),
    (_cell_field("reduce", "concat", [2, 2]), r"cells\.reduce\.concat: state indices must be distinct"),
    (_cell_field("reduce", "concat", [0, 1]), r"cells\.reduce\.concat\[0\]: expected a state index in 2\.\.5, got 0"),
    (_cell_field("reduce", "reduction", False), r"cells\.reduce\.reduction: expected true for the reduce cell"),
    (_broken_v2(format="nasrun.genotype/9"),
     r"format: expected 'nasrun.genotype/4' \(or the earlier 'nasrun.genotype/3', 'nasrun.genotype/2', "
     r"'nasrun.genotype/1'\), got "
     r"'nasrun.genotype/9'"),
    (_broken_v2(cells=KeyError), r"missing key\(s\) 'cells'"),
    (_broken_v2(normal_conact=[2, 3]), r"unknown key\(s\) 'normal_conact'"),
    (_broken_v2(ops=OPS + ["warp_drive"]), r"ops\[8\]: unknown op 'warp_drive'"),
    (_broken_v2(ops=OPS + ["none"]), r"ops: op names must be distinct, repeated: none"),
    (_broken_v2(nodes="4"), r"nodes: expected an integer >= 1, got '4'"),
    (_broken_v2(space=3), r"space: expected a non-empty string"),
    (_broken_v2(cells=[]), r"cells: expected an object of named cells"),
    (_broken_v2(inputs=3), r"inputs: expected 1 \(NB201 cells\) or 2 \(DARTS cells\), got 3"),
]


@pytest.mark.parametrize("payload,message", BROKEN_V2)
def test_broken_v2_files_give_precise_errors(tmp_path, payload, message):
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


def test_optional_fields_default_and_round_trip_through_v3():
    d = _v1(PUBLISHED["DARTS_V2"])
    for k in ("space", "ops", "nodes", "cells"):
        del d[k]
    g = Genotype.from_dict(d)
    assert g.space == "darts" and g.ops == DARTS_OPS and g.nodes == 4 and g == PUBLISHED["DARTS_V2"]
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g  # and it round-trips through /3
    assert _builds(g) == (2, 10)


def test_same_source_twice_in_a_node_is_refused():
    d = _v1(PUBLISHED["DARTS_V2"])
    d["normal"][0] = ["sep_conv_3x3", 1]  # node 0 already takes input 1 (normal[1])
    with pytest.raises(GenotypeError, match=r"^genotype: normal\[1\]: input 1 is also node 0's other input "
                                            r"\(normal\[0\]\); a node takes two different inputs"):
        Genotype.from_dict(d)


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


# ------------------------------------------------- robustness of loading (untrusted files)
MAX_NODES = 32  # the bounds a genotype file may ask for (nodes per cell, bytes per file)
MAX_FILE_BYTES = 1 << 20


def _load_error(tmp_path, data) -> str:
    """Load bytes or a payload from a file; return the GenotypeError message (it must name the file)."""
    path = tmp_path / "genotype.json"
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    started = time.perf_counter()
    with pytest.raises(GenotypeError) as info:
        Genotype.load(path)
    assert time.perf_counter() - started < 1.0  # hang guard
    message = str(info.value)
    assert message.startswith(f"{path}: ") and len(message) < 800
    return message[len(str(path)) + 2:]


def _consistent(nodes):
    """A payload whose cells and concat agree with ``nodes`` (so only the size can be refused)."""
    pairs = [["sep_conv_3x3", 0], ["skip_connect", 1]] * nodes
    return _broken(nodes=nodes, normal=pairs, reduce=pairs, normal_concat=list(range(2, nodes + 2)),
                   reduce_concat=list(range(2, nodes + 2)))


def test_too_many_nodes_or_ops_refused_quickly(tmp_path):
    assert _load_error(tmp_path, _consistent(2000)) == \
        "nodes: 2000 nodes is out of range; allowed: 1..32 nodes per cell (DARTS cells have 4)"
    assert _load_error(tmp_path, _broken(ops=["none"] * 100_000)).startswith(
        "ops: 100000 entries, at most 64 are allowed (known ops: none, max_pool_3x3,")
    assert _load_error(tmp_path, _broken(ops=[f"op{k}" for k in range(60_000)])).startswith("ops: 60000 entries")
    assert _load_error(tmp_path, _broken(normal=[["x", 0]] * 60_000)) == \
        "normal: expected 8 entries (2 per node for 4 nodes), got 60000"
    assert _load_error(tmp_path, _broken(normal=[["sep_conv_3x3", 0]] * 100_000)).startswith(
        "larger than 1048576 bytes")  # a genotype.json is a few kilobytes: not even parsed
    assert _load_error(tmp_path, _broken(reduce_concat=[2] * 100_000)) == \
        "reduce_concat: 100000 entries, but a cell of 4 nodes has only 6 states"
    assert Genotype.from_dict(_consistent(MAX_NODES)).nodes == 32
    with pytest.raises(GenotypeError, match=r"^Genotype: nodes: 33 nodes is out of range"):
        Genotype(**{k: v for k, v in _consistent(33).items() if k not in ("format", "cells")})


def test_huge_integers_and_deep_nesting_name_the_field(tmp_path):
    text = json.dumps(_broken(nodes=123456789)).replace("123456789", "9" * 5000)
    assert _load_error(tmp_path, text.encode()).startswith("nodes: <integer with 5000 digits> nodes is out of range")
    text = json.dumps(_broken(normal_concat=[2, 3, 4, 123456789])).replace("123456789", "-" + "9" * 5000)
    assert _load_error(tmp_path, text.encode()) == \
        "normal_concat[3]: expected a state index in 0..5, got <integer with 5000 digits>"
    text = json.dumps(_broken(reduce=_pairs("reduce", 5, ["max_pool_3x3", 123456789])))
    assert _load_error(tmp_path, text.replace("123456789", "1" * 5000).encode()).startswith(
        "reduce[5]: input <integer with 5000 digits> is out of range for node 2 (state 4): allowed 0..3")
    nested = json.dumps(_broken(normal=[])).replace('"normal": []', '"normal": [' + "[" * 100_000 + "]" * 100_001)
    assert _load_error(tmp_path, nested.encode()).startswith("normal[0]: nested too deeply")
    assert _load_error(tmp_path, b"[" * 100_000).startswith("the top-level value: nested too deeply")
    # nesting the parser still reads is refused by the field's own check, with a shortened echo
    nested = json.dumps(_broken(normal_concat=[])).replace("[]", "[" * 500 + "]" * 500)
    assert _load_error(tmp_path, nested.encode()) == "normal_concat[0]: expected a state index in 0..5, got [[[[...]]]]"


def test_echoed_values_are_shortened(tmp_path):
    message = _load_error(tmp_path, _broken(ops=OPS + ["x" * 100_000]))
    assert message.startswith("ops[8]: unknown op 'xxxx") and "xx...xx" in message and "known ops: none," in message
    message = _load_error(tmp_path, _broken(**{"y" * 100_000: 1}))
    assert message.startswith("unknown key(s) 'yyy") and "...; allowed keys: format, space" in message


KEYS = "format, space, ops, nodes, normal, normal_concat, reduce, reduce_concat, cells"


@pytest.mark.parametrize("data,message", [
    (b"", "the file is empty; expected a JSON object with keys format, space,"),
    (b"  \n\t", "the file is empty"),
    (b"null", f"expected a JSON object with keys {KEYS}, got null"),
    (b"[1, 2]", f"expected a JSON object with keys {KEYS}, got a list"),
    (b'"DARTS"', "expected a JSON object"),
    (b'{"format": "nasrun.genotype/1", "nor', "not valid JSON: Unterminated string starting at line 1, column 33"),
    (b'{"format": "\xff\xfe"}', "not a text (UTF-8) file: invalid start byte at byte 12"),
    (b"\x80" * 10, "not a text (UTF-8) file: invalid start byte at byte 0"),
])
def test_unreadable_contents_name_the_file(tmp_path, data, message):
    assert _load_error(tmp_path, data).startswith(message)


def test_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "genotype.json"
    path.write_bytes(b"\xef\xbb\xbf" + PUBLISHED["PDARTS"].to_json().encode())
    assert Genotype.load(path) == PUBLISHED["PDARTS"]


def test_oversized_file_and_pipe_are_not_read(tmp_path):
    assert _load_error(tmp_path, b" " * (MAX_FILE_BYTES + 1)).startswith(f"larger than {MAX_FILE_BYTES} bytes")
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.json"
        os.mkfifo(fifo)
        with pytest.raises(GenotypeError, match=r"pipe\.json: not a regular file"):
            Genotype.load(fifo)  # opening a pipe with no writer would block forever


def test_space_must_be_a_known_space(tmp_path):
    yaml_names = sorted(p.stem for p in (Path(nasrun.conf.__file__).parent / "space").glob("*.yaml"))
    assert known_spaces() == tuple(yaml_names) and "darts" in yaml_names
    allowed = ", ".join(yaml_names)
    assert _load_error(tmp_path, _broken(space="nas201")) == \
        f"space: unknown space 'nas201'; known spaces: {allowed} (the files in nasrun/conf/space/), or any space " \
        "whose description the file carries (space_description, written by nasrun search since nasrun.genotype/3)"
    assert _load_error(tmp_path, _broken(space=" ")).startswith("space: expected a non-empty string")
    assert _load_error(tmp_path, _broken(space="DARTS")).startswith("space: unknown space 'DARTS'")
    assert Genotype.from_dict(_broken(space="darts")) == PUBLISHED["DARTS_V2"]


def _builds(g):
    net = NetworkCIFAR(g, C=4, num_classes=10, layers=3, auxiliary=False, in_channels=3, input_size=8).eval()
    with torch.no_grad():
        logits, _ = net(torch.randn(2, 3, 8, 8))
    return tuple(logits.shape)


@pytest.mark.parametrize("concat,field", [([0, 1], "reduce_concat[0]"), ([2, 3, 1], "reduce_concat[2]")])
def test_reduce_concat_of_cell_inputs_is_refused(tmp_path, concat, field):
    message = _load_error(tmp_path, _broken(reduce_concat=concat))
    assert message.startswith(f"{field}: state {concat[-1] if field.endswith('[2]') else 0} is a cell input; "
                              "a reduction cell's output can only concatenate its nodes (states 2..5)")


def test_concat_variants_that_build_are_accepted():
    # normal cells may concatenate their inputs; nodes used by nothing are allowed (DARTS does that)
    for normal_concat, reduce_concat in [([0, 1], [2, 3, 4, 5]), ([5, 0, 3], [4]), ([1], [5, 2])]:
        g = Genotype.from_dict(_broken(normal_concat=normal_concat, reduce_concat=reduce_concat))
        assert g.normal_concat == tuple(normal_concat) and _builds(g) == (2, 10)
    for name in ("DARTS_V1", "DARTS_V2", "PDARTS", "PC_DARTS_cifar", "PC_DARTS_image"):
        assert _builds(PUBLISHED[name]) == (2, 10)


def _folder(tmp_path, result=None, files=()):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    if result is not None:
        (run / "result.json").write_text(json.dumps(result))
    for name in files:
        (run / name).write_bytes(b"x")
    return run


@pytest.mark.parametrize("result,files,evidence", [
    ({"status": "completed", "command": "retrain", "genotype_source": "DARTS_V2"}, ("model.pt",),
     r"its result.json says command: retrain\); it retrained genotype=DARTS_V2;"),
    ({"status": "failed", "reason": "boom", "config": {"genotype": "PDARTS"}}, (),
     r"its result.json records the config of a retraining\);"),
    (None, ("model.pt",), r"it holds model.pt and no genotype.json\);"),
])
def test_resolve_retrain_folder_says_so(tmp_path, result, files, evidence):
    run = _folder(tmp_path, result, files)
    with pytest.raises(GenotypeError) as info:
        resolve_genotype(str(run))
    message = str(info.value)
    where = re.escape(str(run))
    assert re.search(rf"^genotype='{where}': {where} is a retrain run folder \({evidence}", message)
    assert "expected a search run folder (one holding genotype.json), a genotype.json file " \
           "or a published name (DARTS_V1," in message
    assert "did not finish" not in message


def test_resolve_pipeline_folder_and_odd_specs(tmp_path):
    job = tmp_path / "job"
    (job / "search").mkdir(parents=True)
    PUBLISHED["PDARTS"].save(job / "search" / "genotype.json")
    where = re.escape(str(job))
    with pytest.raises(GenotypeError, match=rf"^genotype='{where}': {where} is a pipeline job folder; "
                                            rf"its genotype is in the search run folder {where}/search$"):
        resolve_genotype(str(job))
    with pytest.raises(GenotypeError, match=r"no such file or folder") as info:
        resolve_genotype("/" + "x" * 10_000)  # too long for the OS: still a GenotypeError
    assert len(str(info.value)) < 600
    with pytest.raises(GenotypeError, match="no such file or folder"):
        resolve_genotype("~no_such_user_here/genotype.json")
