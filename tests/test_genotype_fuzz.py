"""Seeded fuzzing of genotype.json loading: every mutated file is accepted and builds, or is refused cleanly.

A genotype file is untrusted input. Whatever it holds, ``Genotype.load`` must either return a
genotype that NetworkCIFAR can build and run, or raise GenotypeError naming the file, and it
must do so quickly (a hang guard, not a benchmark).

The second half knows the answer: valid genotypes of many spaces (formats /1, /2 and /3) get one
mutation each that either breaks a rule (a missing or extra cell kind, a duplicated edge, a node with
the wrong number of inputs, a space the cells do not fit, an op its edge cannot take, a changed space
description, ...) and must be refused naming the field, or keeps the genotype valid and must load as
written and build. They go through ``resolve_genotype``, what ``nasrun show`` and ``nasrun retrain`` use.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import pytest
import torch

from nasrun.errors import GenotypeError, NasrunError
from nasrun.genotype.genotype import PUBLISHED, Genotype, resolve_genotype
from nasrun.nets.cifar import NetworkCIFAR
from nasrun.spaces.ops import DARTS_OPS, OPS

SEED = 20240611
CASES = 400
SECONDS_PER_CASE = 1.0  # hang guard
KEYS = ("format", "space", "ops", "nodes", "normal", "normal_concat", "reduce", "reduce_concat", "cells")
HUGE_INT = "9" * 5000
MAX_NODES = 32  # the most nodes per cell a genotype may ask for
ODD_VALUES: list[Any] = [None, True, False, 0, -1, 3, 1.5, float("nan"), "", " ", "4", "darts",
                         [], {}, [[]], [None], {"a": 1}, 10**30, -(10**30), ["sep_conv_3x3", 0]]


# ------------------------------------------------------------------ base payloads
def random_cell(rng: random.Random, nodes: int, ops: list[str]) -> list[list[Any]]:
    """A valid cell: two [op, input] pairs per node, two different inputs from earlier states."""
    usable = [op for op in ops if op != "none"]
    return [[rng.choice(usable), src] for i in range(nodes) for src in rng.sample(range(i + 2), 2)]


def v1_payload(g: Genotype) -> dict[str, Any]:
    """A genotype as a ``nasrun.genotype/1`` file: shared cells as ``[op, input]`` pairs."""
    return {"format": "nasrun.genotype/1", "space": g.space, "ops": list(g.ops), "nodes": g.nodes,
            "normal": [list(p) for p in g.normal], "normal_concat": list(g.normal_concat),
            "reduce": [list(p) for p in g.reduce], "reduce_concat": list(g.reduce_concat), "cells": None}


def random_payload(rng: random.Random) -> dict[str, Any]:
    """A valid payload: a published genotype, or random cells over a random vocabulary."""
    if rng.random() < 0.4:
        return v1_payload(PUBLISHED[rng.choice(sorted(PUBLISHED))])
    ops = ["none"] + rng.sample(sorted(set(OPS) - {"none"}), rng.randint(1, 5))
    nodes = rng.randint(1, 5)
    d = {"format": "nasrun.genotype/1", "space": "darts", "ops": ops, "nodes": nodes,
         "normal": random_cell(rng, nodes, ops), "normal_concat": list(range(2, nodes + 2)),
         "reduce": random_cell(rng, nodes, ops), "reduce_concat": list(range(2, nodes + 2)), "cells": None}
    return d


# -------------------------------------------------------------------- mutations
# Each mutation takes (rng, payload) and returns a payload (dict or any JSON value) or raw bytes.
def swap_type(rng, d):
    d[rng.choice(KEYS)] = rng.choice(ODD_VALUES)
    return d


def drop_field(rng, d):
    d.pop(rng.choice(KEYS), None)
    return d


def extra_field(rng, d):
    d[rng.choice(["normal_conact", "Nodes", "", "x" * 300, "cells_"])] = rng.choice(ODD_VALUES)
    return d


def _pick_pair(rng, d):
    cell = rng.choice(["normal", "reduce"])
    pairs = d.get(cell)
    if not isinstance(pairs, list) or not pairs:
        return cell, None
    return cell, rng.randrange(len(pairs))


def wrong_op(rng, d):
    cell, k = _pick_pair(rng, d)
    if k is not None:
        d[cell][k] = [rng.choice(["none", "sep_conv_9x9", "", "SEP_CONV_3X3", "x" * 5000, *OPS]), d[cell][k][1]]
    return d


def wrong_input(rng, d):
    cell, k = _pick_pair(rng, d)
    if k is not None:
        node = k // 2
        src = rng.choice([-1, node + 2, node + 3, 10**6, 2.0, "0", None, rng.randint(0, node + 1)])
        d[cell][k] = [d[cell][k][0], src]
    return d


def bad_pair_shape(rng, d):
    cell, k = _pick_pair(rng, d)
    if k is not None:
        op, src = d[cell][k]
        d[cell][k] = rng.choice([[op], [op, src, src], [src, op], {"op": op, "input": src}, op, [[op, src]]])
    return d


def valid_pair_change(rng, d):
    """Often accepted: a different op of the vocabulary on a different earlier state (refused when it is the
    node's other input)."""
    cell, k = _pick_pair(rng, d)
    ops = [op for op in d.get("ops", DARTS_OPS) if op != "none"] if isinstance(d.get("ops"), list) else []
    if k is not None and ops:
        d[cell][k] = [rng.choice(ops), rng.randint(0, k // 2 + 1)]
    return d


def change_concat(rng, d):
    cell = rng.choice(["normal", "reduce"])
    nodes = d["nodes"] if isinstance(d.get("nodes"), int) and 1 <= d["nodes"] <= 64 else 4
    states = list(range(-1, nodes + 3))
    d[f"{cell}_concat"] = rng.choice([
        rng.sample(states, rng.randint(0, len(states))),
        sorted(rng.sample(range(nodes + 2), rng.randint(1, nodes + 2))),
        sorted(rng.sample(range(2, nodes + 2), rng.randint(1, nodes))),
        [0, 1], [2, 2], [2, 3, 4, 5, 6], ["2"], [True],
    ])
    return d


def change_nodes(rng, d):
    """A new node count, with cells to match (consistent files of any size) or not."""
    nodes = rng.choice([0, -1, 1, 2, 3, 6, 8, MAX_NODES, MAX_NODES + 1, 2000])
    d["nodes"] = nodes
    if rng.random() < 0.7 and 0 < nodes <= 2000:
        ops = d.get("ops")
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops) or set(ops) <= {"none"}:
            ops = list(DARTS_OPS)
        for cell in ("normal", "reduce"):
            d[cell] = random_cell(rng, nodes, ops)
            d[f"{cell}_concat"] = list(range(2, nodes + 2))
    return d


def change_ops(rng, d):
    ops = list(d.get("ops", DARTS_OPS)) if isinstance(d.get("ops"), list) else list(DARTS_OPS)
    choice = rng.randrange(6)
    if choice == 0 and ops:
        ops.remove(rng.choice(ops))
    elif choice == 1 and ops:
        ops.append(rng.choice(ops))
    elif choice == 2:
        ops.append(rng.choice(["warp_drive", "", "x" * 1000, 7]))
    elif choice == 3:
        rng.shuffle(ops)
    elif choice == 4:
        ops = ["none"] * 100_000
    else:
        ops = sorted(OPS)
    d["ops"] = ops
    return d


def change_space(rng, d):
    d["space"] = rng.choice(["nas201", " ", "", "DARTS", "darts ", "darts", "x" * 10_000, "../darts"])
    return d


def change_format(rng, d):
    d["format"] = rng.choice(["nasrun.genotype/2", "", None, 1, "nasrun.genotype/1", ["nasrun.genotype/1"]])
    return d


def huge_list(rng, d):
    key = rng.choice(["normal", "reduce", "normal_concat", "reduce_concat", "ops"])
    d[key] = [["sep_conv_3x3", 0]] * 100_000 if key in ("normal", "reduce") else [2] * 100_000
    return d


def huge_number(rng, d):
    """A 5000-digit (or 10**30-sized) integer in a numeric field, written into the JSON text."""
    key = rng.choice(["nodes", "normal_concat", "reduce", "space", "format"])
    marker = 123456789123
    if key == "nodes":
        d["nodes"] = marker
    elif key == "reduce" and isinstance(d.get("reduce"), list) and d["reduce"]:
        d["reduce"][0] = [d["reduce"][0][0], marker]
    else:
        d[key] = [marker]
    digits = rng.choice([HUGE_INT, "-" + HUGE_INT, "1" + "0" * 30, "9" * 101])
    return json.dumps(d).replace(str(marker), digits).encode()


def deep_nesting(rng, d):
    key = rng.choice(KEYS)
    depth = rng.choice([5, 50, 900, 5_000, 100_000])
    text = json.dumps(d) if key in d else json.dumps({**d, key: 0})
    value = json.dumps(d.get(key, 0))
    nested = "[" * depth + value + "]" * depth
    return text.replace(f'"{key}": {value}', f'"{key}": {nested}', 1).encode()


def raw_bytes(rng, d):
    text = json.dumps(d).encode()
    choice = rng.randrange(7)
    if choice == 0:  # not UTF-8
        k = rng.randrange(len(text))
        return text[:k] + rng.choice([b"\xff", b"\xc3", b"\x80\x80", b"\xed\xa0\x80"]) + text[k:]
    if choice == 1:
        return rng.choice([b"", b"   \n", b"\xef\xbb\xbf"])
    if choice == 2:  # truncated
        return text[: rng.randrange(len(text))]
    if choice == 3:
        return rng.choice([b"null", b"[]", b"0", b'"genotype"', b"true", b"NaN", b"{}"])
    if choice == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    if choice == 5:
        return b"\xef\xbb\xbf" + text  # a byte-order mark in front of a valid file
    return b"Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=range(2, 6))"


MUTATIONS: list[Callable[[random.Random, dict], Any]] = [
    swap_type, drop_field, extra_field, wrong_op, wrong_input, bad_pair_shape, valid_pair_change,
    valid_pair_change, change_concat, change_nodes, change_nodes, change_ops, change_space,
    change_format, huge_list, huge_number, deep_nesting, raw_bytes,
]


def mutate(rng: random.Random) -> tuple[str, bytes]:
    """One case: a valid payload with 1-3 mutations, as the bytes of a file."""
    payload: Any = random_payload(rng)
    names = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        fn = rng.choice(MUTATIONS)
        names.append(fn.__name__)
        payload = fn(rng, payload)
        if not isinstance(payload, dict):
            break
    if isinstance(payload, bytes):
        return "+".join(names), payload
    return "+".join(names), json.dumps(payload).encode()


# ------------------------------------------------------------------ checking
def build_and_run(g: Genotype) -> None:
    """An accepted genotype must build at a tiny size and give finite logits in eval and train mode."""
    net = NetworkCIFAR(g, C=4, num_classes=10, layers=3, auxiliary=False, in_channels=3, input_size=8)
    x = torch.randn(2, 3, 8, 8)
    net.eval()
    with torch.no_grad():
        logits, aux = net(x)
    assert logits.shape == (2, 10) and aux is None and bool(torch.isfinite(logits).all())
    net.train()
    net.drop_path_prob = 0.2
    logits, _ = net(x)
    assert logits.shape == (2, 10)


def run_case(path: Path, data: bytes) -> str:
    """'accepted' or 'refused'; anything else (another exception, a wrong message) fails the test."""
    path.write_bytes(data)
    try:
        g = Genotype.load(path)
    except GenotypeError as e:
        message = str(e)
        assert message.startswith(f"{path}: "), message[:300]
        assert len(message) < 1500 and "\n" not in message, message[:300]
        return "refused"
    build_and_run(g)
    assert Genotype.from_dict(g.to_dict()) == g  # what it builds is what a valid file would build
    return "accepted"


def test_fuzzed_genotype_files_are_built_or_refused(tmp_path):
    rng = random.Random(SEED)
    counts = {"accepted": 0, "refused": 0}
    slowest = 0.0
    for i in range(CASES):
        name, data = mutate(rng)
        path = tmp_path / f"case{i:03d}.json"
        started = time.perf_counter()
        try:
            outcome = run_case(path, data)
        except Exception:
            raise AssertionError(f"case {i} ({name}) raised:\n{traceback.format_exc()}") from None
        elapsed = time.perf_counter() - started
        assert elapsed < SECONDS_PER_CASE, f"case {i} ({name}) took {elapsed:.2f}s"
        slowest = max(slowest, elapsed)
        counts[outcome] += 1
        path.unlink()
    print(f"\ngenotype fuzz: {CASES} mutations, {counts['accepted']} accepted (built and ran), "
          f"{counts['refused']} refused with GenotypeError; slowest case {slowest:.3f}s")
    assert counts["accepted"] + counts["refused"] == CASES
    # Both outcomes must be exercised, or the fuzzer has stopped testing one side.
    assert counts["accepted"] >= 40 and counts["refused"] >= 150



# =================================================================== mutations whose outcome is known
SPACES = [  # (space, overrides of the search command line that define it, cells in its networks)
    ("darts", [], 3), ("darts", ["space.nodes=2", "space.ops=[none,max_pool_3x3,skip_connect,sep_conv_3x3]"], 3),
    ("s5", [], 3), ("nasp", [], 3), ("rdarts_s1", [], 3), ("rdarts_s3", ["space.nodes=3"], 3), ("nb201", [], 1),
    ("large", ["space.nodes=2"], 4), ("large", [], 6), ("large", ["space.nodes=3"], 3),
]
USER_SPACES = [  # spaces defined outside nasrun's files: only a genotype carrying its description loads
    dict(name="myspace", ops=["none", "skip_connect", "sep_conv_3x3", "avg_pool_3x3"], cell_ops=None, edge_ops=None,
         nodes=3, inputs=2, derivation="top_k", edges_per_node=2, cells="shared", skeleton="darts"),
    dict(name="mygrid", ops=["none", "skip_connect", "conv_3x3"], cell_ops=None, edge_ops=None, nodes=2, inputs=2,
         derivation="searched", edges_per_node=2, cells="independent", skeleton="darts"),
    dict(name="my_one_edge", ops=["max_pool_3x3", "sep_conv_3x3"], cell_ops=None, edge_ops=None, nodes=3, inputs=2,
         derivation="top_k", edges_per_node=1, cells="shared", skeleton="darts"),
]
SHAPE_OF = {"darts": (2, "shared"), "nb201": (1, "shared"), "large": (2, "independent")}


@dataclass
class Base:
    """A valid genotype payload and what loading it knows about its space."""

    payload: dict[str, Any]
    space: Any  # nasrun.spaces.space.Space the cells were derived in
    layers: int
    exact: bool  # the loader knows the space exactly (ops, nodes and each edge's ops are checked)
    shipped: bool  # the space ships with nasrun (a file without a description may name it)
    fmt: str


@functools.lru_cache(maxsize=None)
def _shipped(name: str, overrides: tuple[str, ...]) -> Any:
    from nasrun.config.compose import compose, to_typed
    from nasrun.spaces.space import Space

    return Space(to_typed(compose("search", [f"space={name}", *overrides])).space)


@functools.lru_cache(maxsize=None)
def _user(index: int) -> Any:
    from nasrun.spaces.space import Space

    return Space(SimpleNamespace(**USER_SPACES[index], description=""))


def _derived(rng: random.Random, space: Any, layers: int) -> Genotype:
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    weights = {kind: torch.randn(space.num_edges, len(space.ops), generator=g) for kind in space.kinds(layers)}
    return space.derive(weights, None, layers).with_space(space)


def _v1_of(d: dict[str, Any]) -> dict[str, Any]:
    """Format /1: shared cells as [op, input] pairs, two per node in target order (top-2 cells only)."""
    out = {"format": "nasrun.genotype/1", "space": d["space"], "ops": d["ops"], "nodes": d["nodes"], "cells": None}
    for kind in ("normal", "reduce"):
        edges = sorted(d["cells"][kind]["edges"], key=lambda e: e[2])
        out[kind] = [[op, src] for op, src, _ in edges]
        out[f"{kind}_concat"] = d["cells"][kind]["concat"]
    return out


def random_base(rng: random.Random) -> Base:
    """A valid genotype: published, or derived from random weights in a shipped or a user's space; format /1-/3."""
    if rng.random() < 0.15:
        g = PUBLISHED[rng.choice(sorted(PUBLISHED))]
        space, layers, exact = _shipped("darts", ()), 3, False
        d = g.to_dict()
    elif rng.random() < 0.2:
        space, layers = _user(rng.randrange(len(USER_SPACES))), rng.choice([3, 4, 5])
        d = _derived(rng, space, layers).to_dict()
        return Base(d, space, layers if space.sharing == "independent" else 3, True, False, d["format"])
    else:
        name, overrides, layers = rng.choice(SPACES)
        space = _shipped(name, tuple(overrides))
        d, exact = _derived(rng, space, layers).to_dict(), True
    fmt = rng.choice(["/4", "/3", "/2", "/2 no hash", "/1"])
    if fmt == "/3":
        d = {k: v for k, v in d.items() if k != "rule"}
        d["format"] = "nasrun.genotype/3"
    two_each = space.derivation == "top_k" and space.edges_per_node == 2 and space.sharing == "shared"
    if fmt == "/1" and two_each and space.inputs == 2 and space.name in ("darts", "s5", "nasp", "rdarts_s1",
                                                                          "rdarts_s3"):
        return Base(_v1_of(d), space, layers, False, True, "/1")
    if fmt.startswith("/2"):
        d = {k: v for k, v in d.items() if k not in ("space_description", "rule")}
        d["format"] = "nasrun.genotype/2"
        if fmt == "/2 no hash":
            d["space_hash"], exact = None, False
        return Base(d, space, layers, exact, True, d["format"])
    if d.get("space_description") is None:  # a published genotype as format /3: no description, no hash
        exact = False
    return Base(d, space, layers, exact, True, d["format"])


REFUSE, ACCEPT = "refuse", "accept"


def _cells(b: Base) -> dict[str, Any]:
    return b.payload["cells"]


def _edge_choices(b: Base, name: str, src: int, dst: int, allow_none: bool) -> list[str]:
    space = b.space
    row = space.edge_ops(space.cell_type(name, b.layers))[space.edges.index((src, dst))]
    ops = [space.ops[k] for k in row]
    return [op for op in ops if allow_none or op != "none"]


def _pick_cell(rng: random.Random, b: Base) -> str:
    return rng.choice(sorted(_cells(b)))


def _node_edges(cell: dict, target: int) -> list[list[Any]]:
    return [e for e in cell["edges"] if e[2] == target]


def _targets(b: Base) -> list[int]:
    inputs = b.space.inputs
    return list(range(inputs, inputs + b.space.nodes))


# -- each takes (rng, base) and returns (payload, verdict, the field a refusal names or None, class name)
def m_drop_kind(rng, b):
    cells = _cells(b)
    if b.fmt == "/1":
        kind = rng.choice(["normal", "reduce"])
        del b.payload[kind]
        return b.payload, REFUSE, f"missing key(s) '{kind}'", "cell kind missing"
    names = sorted(cells, key=lambda n: (len(n), n))
    if len(names) > 2 and names[0].startswith("cell"):  # a middle position: the others no longer count 0..n-1
        del cells[names[rng.randrange(1, len(names) - 1)]]
        return b.payload, REFUSE, "cells: per-position cells must be", "cell kind missing"
    kind = rng.choice(names)
    del cells[kind]
    if not cells:
        return b.payload, REFUSE, "cells: expected an object of named cells", "cell kind missing"
    return b.payload, REFUSE, f"cells.{kind}: missing", "cell kind missing"


def m_extra_kind(rng, b):
    if b.fmt == "/1":
        return m_drop_kind(rng, b)
    cells = _cells(b)
    some = copy.deepcopy(next(iter(cells.values())))
    if b.space.inputs == 1:
        cells["reduce"] = {**some, "reduction": True}
        return b.payload, REFUSE, "cells.reduce: a one-input (NB201) genotype has no reduce cell", "extra cell kind"
    cells["normal" if "cell0" in cells else "cell0"] = {**some, "reduction": False}
    return b.payload, REFUSE, "cells: either shared cells (normal, reduce) or one per position", "extra cell kind"


def m_duplicate_edge(rng, b):
    if b.fmt == "/1":
        kind = rng.choice(["normal", "reduce"])
        node = rng.randrange(b.payload["nodes"])
        b.payload[kind][2 * node + 1][1] = b.payload[kind][2 * node][1]
        return b.payload, REFUSE, f"{kind}[{2 * node + 1}]: input", "duplicated edge"
    name = _pick_cell(rng, b)
    edges = _cells(b)[name]["edges"]
    op, src, dst = rng.choice(edges)
    other = rng.choice(_edge_choices(b, name, src, dst, allow_none=b.space.derivation == "argmax"))
    edges.insert(rng.randrange(len(edges) + 1), [rng.choice([op, other]), src, dst])
    return b.payload, REFUSE, f"cells.{name}.edges", "duplicated edge"


def m_remove_input(rng, b):
    """One edge fewer: refused unless the space keeps any non-empty set of edges per node (searched)."""
    if b.fmt == "/1":
        return m_duplicate_edge(rng, b)
    name = _pick_cell(rng, b)
    cell = _cells(b)[name]
    target = rng.choice(_targets(b))
    edges = _node_edges(cell, target)
    cell["edges"].remove(rng.choice(edges))
    if b.space.derivation == "searched" and len(edges) > 1:
        return b.payload, ACCEPT, None, "input removed (searched space)"
    if b.space.inputs == 1:  # refused first as an incomplete NB201 cell
        return b.payload, REFUSE, f"cells.{name}.edges: ", "wrong input count"
    return b.payload, REFUSE, f"cells.{name}.edges: node {target} has", "wrong input count"


def m_add_input(rng, b):
    """One edge more on a node from a state it does not use yet: refused for top-k and complete cells."""
    if b.fmt == "/1":
        return m_duplicate_edge(rng, b)
    name = _pick_cell(rng, b)
    cell = _cells(b)[name]
    open_ = [(src, t) for t in _targets(b) for src in range(t) if src not in {e[1] for e in _node_edges(cell, t)}]
    if not open_:  # every edge is there (NB201, a dense searched cell): a second op on one is refused
        return m_duplicate_edge(rng, b)
    src, target = rng.choice(open_)
    cell["edges"].append([rng.choice(_edge_choices(b, name, src, target, allow_none=False)), src, target])
    if b.space.derivation == "searched":
        return b.payload, ACCEPT, None, "input added (searched space)"
    return b.payload, REFUSE, f"cells.{name}.edges: node {target} has", "wrong input count"


def m_rename_space(rng, b):
    """Name a space the cells cannot fit (other cell inputs or cell sharing), or a space nasrun does not ship."""
    mine = (b.space.inputs, b.space.sharing)
    others = [name for name, shape in SHAPE_OF.items() if shape != mine]
    if rng.random() < 0.2:
        others = ["nas201", "myspace", "DARTS"]
    name = rng.choice([other for other in others if other != b.payload["space"]])
    b.payload["space"] = name
    if b.payload.get("space_description") is not None:
        return b.payload, REFUSE, "space_description.name", "space/cells mismatch"
    return b.payload, REFUSE, "space: ", "space/cells mismatch"


def m_wrong_edge_op(rng, b):
    """An op of the vocabulary that this edge cannot take (none in a top-k cell, another cell type's op, ...)."""
    if b.fmt == "/1" or not b.exact:
        return m_change_op(rng, b)
    name = _pick_cell(rng, b)
    edges = _cells(b)[name]["edges"]
    k = rng.randrange(len(edges))
    op, src, dst = edges[k]
    allowed = _edge_choices(b, name, src, dst, allow_none=b.space.derivation == "argmax")
    wrong = [o for o in b.space.ops if o not in allowed]
    if not wrong:
        return m_change_op(rng, b)
    edges[k] = [rng.choice(wrong), src, dst]
    return b.payload, REFUSE, f"cells.{name}.edges[{k}]: op", "op the edge cannot take"


def m_flip_reduction(rng, b):
    if b.fmt == "/1":
        return m_drop_kind(rng, b)
    name = _pick_cell(rng, b)
    cell = _cells(b)[name]
    cell["reduction"] = not cell.get("reduction", name == "reduce")
    if cell["reduction"] and min(cell["concat"]) < b.space.inputs:  # refused first for its concat of inputs
        return b.payload, REFUSE, f"cells.{name}.concat", "reduction flag"
    return b.payload, REFUSE, f"cells.{name}.reduction", "reduction flag"


def m_tamper_description(rng, b):
    d = b.payload.get("space_description")
    if d is None:
        return m_rename_space(rng, b)
    key = rng.choice(["nodes", "ops", "edges_per_node", "derivation", "hash", "drop", "extra"])
    if key == "nodes":
        d["nodes"] += 1
    elif key == "ops":
        d["ops"] = list(reversed(d["ops"]))
    elif key == "edges_per_node":
        d["edges_per_node"] = 3 - d["edges_per_node"] if d["inputs"] == 2 else 2
    elif key == "derivation":
        d["derivation"] = {"top_k": "searched", "searched": "top_k", "argmax": "top_k"}[d["derivation"]]
    elif key == "hash":
        b.payload["space_hash"] = "0123456789ab"
    elif key == "drop":
        del d[rng.choice(sorted(d))]
    else:
        d["description"] = "for people"
    return b.payload, REFUSE, "space_", "changed space description"


def m_nodes_field(rng, b):
    b.payload["nodes"] += rng.choice([-1, 1]) if b.payload["nodes"] > 1 else 1
    return b.payload, REFUSE, None, "node count"


def m_inputs_field(rng, b):
    if b.fmt == "/1":
        return m_nodes_field(rng, b)
    b.payload["inputs"] = 3 - b.payload["inputs"]
    return b.payload, REFUSE, None, "cell inputs"


# -- keeping the genotype valid
def m_change_op(rng, b):
    if b.fmt == "/1":
        kind = rng.choice(["normal", "reduce"])
        k = rng.randrange(len(b.payload[kind]))
        src, dst = b.payload[kind][k][1], 2 + k // 2
        b.payload[kind][k][0] = rng.choice(_edge_choices(b, kind, src, dst, allow_none=False))
        return b.payload, ACCEPT, None, "other op (valid)"
    name = _pick_cell(rng, b)
    edges = _cells(b)[name]["edges"]
    k = rng.randrange(len(edges))
    op, src, dst = edges[k]
    edges[k] = [rng.choice(_edge_choices(b, name, src, dst, allow_none=b.space.derivation == "argmax")), src, dst]
    return b.payload, ACCEPT, None, "other op (valid)"


def m_move_source(rng, b):
    if b.fmt == "/1" or b.space.derivation == "argmax":
        return m_change_op(rng, b)
    name = _pick_cell(rng, b)
    cell = _cells(b)[name]
    moves = [(e, src) for t in _targets(b) for e in _node_edges(cell, t) for src in range(t)
             if src not in {x[1] for x in _node_edges(cell, t)}]
    if not moves:
        return m_change_op(rng, b)
    edge, src = rng.choice(moves)
    edge[1] = src
    edge[0] = rng.choice(_edge_choices(b, name, src, edge[2], allow_none=False))
    return b.payload, ACCEPT, None, "other source (valid)"


def m_shuffle_edges(rng, b):
    if b.fmt == "/1":
        return m_change_op(rng, b)
    rng.shuffle(_cells(b)[_pick_cell(rng, b)]["edges"])
    return b.payload, ACCEPT, None, "edges reordered (valid)"


def m_drop_description(rng, b):
    """Without its description a genotype is checked against the space nasrun ships under its name, if any."""
    if b.fmt == "/1":
        return m_change_op(rng, b)
    how = rng.choice(["null", "v2"])
    b.payload.pop("rule", None)  # a key of format /4
    if how == "v2":
        b.payload.pop("space_description", None)
        b.payload["format"] = "nasrun.genotype/2"
    else:
        b.payload["space_description"] = None
        b.payload["format"] = "nasrun.genotype/3"
    if not b.shipped:
        return b.payload, REFUSE, f"space: unknown space '{b.payload['space']}'", "description dropped (user space)"
    return b.payload, ACCEPT, None, "description dropped (valid)"


def m_concat(rng, b):
    if b.fmt == "/1" or b.space.inputs == 1:
        return m_change_op(rng, b)
    name = _pick_cell(rng, b)
    cell = _cells(b)[name]
    low = b.space.inputs if cell.get("reduction", name == "reduce") else 0
    states = list(range(low, b.space.inputs + b.space.nodes))
    cell["concat"] = rng.sample(states, rng.randint(1, len(states)))
    return b.payload, ACCEPT, None, "other concat (valid)"


BREAKING = [m_drop_kind, m_extra_kind, m_duplicate_edge, m_duplicate_edge, m_remove_input, m_add_input, m_rename_space,
            m_wrong_edge_op, m_flip_reduction, m_tamper_description, m_nodes_field, m_inputs_field]
KEEPING = [m_change_op, m_move_source, m_shuffle_edges, m_drop_description, m_concat]


def m_arch_string(rng, b):
    """An NB201 file's arch string must be its cell's."""
    if b.payload.get("nb201") is None:
        return m_duplicate_edge(rng, b)
    edges = _cells(b)["normal"]["edges"]
    k = rng.randrange(len(edges))
    edges[k][0] = rng.choice([op for op in b.space.ops if op != edges[k][0]])
    return b.payload, REFUSE, "nb201: ", "arch string"


BREAKING.append(m_arch_string)


def _arch(cell: dict) -> str:
    """The NB201 arch string of a one-input cell of 3 nodes (|op~0|+|op~0|op~1|+|op~0|op~1|op~2|)."""
    ops = {(src, dst): op for op, src, dst in cell["edges"]}
    return "+".join("|" + "|".join(f"{ops[(src, dst)]}~{src}" for src in range(dst)) + "|" for dst in (1, 2, 3))


def known_mutation(rng: random.Random) -> tuple[str, dict, str, Optional[str], str]:
    """(name, payload, verdict, field a refusal must name, class): one mutation of a valid genotype."""
    base = random_base(rng)
    fn = rng.choice(BREAKING if rng.random() < 0.6 else KEEPING)
    payload, verdict, field, klass = fn(rng, base)
    if verdict == ACCEPT and payload.get("nb201") is not None:  # the arch string follows the edited cell
        payload["nb201"] = _arch(payload["cells"]["normal"])
    return f"{fn.__name__} on {base.space.name} {base.fmt}", payload, verdict, field, klass


def _expected_cells(payload: dict) -> dict:
    """The cells a file describes, as format /3 writes them (what a loaded genotype must hold)."""
    if payload["format"] == "nasrun.genotype/1":
        return {kind: {"edges": [[op, src, 2 + k // 2] for k, (op, src) in enumerate(payload[kind])],
                       "concat": payload[f"{kind}_concat"], "reduction": kind == "reduce"}
                for kind in ("normal", "reduce")}
    return {name: {"edges": c["edges"], "concat": c["concat"], "reduction": c.get("reduction", name == "reduce")}
            for name, c in payload["cells"].items()}


def _build(g: Genotype) -> None:
    from nasrun.nets import build_network

    layers = 1 if g.inputs == 1 else (len(g.cells) if not g.shared else 3)
    net = build_network(g, 4, 10, layers, False, in_channels=3, input_size=8).eval()
    with torch.no_grad():
        logits, _ = net(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 10) and bool(torch.isfinite(logits).all())


def check_known(path: Path, payload: dict, verdict: str, field: Optional[str]) -> str:
    """Load through resolve_genotype (nasrun show's path): 'refused', 'accepted', or why the outcome is wrong."""
    path.write_text(json.dumps(payload))
    try:
        genotype, _ = resolve_genotype(str(path))
    except NasrunError as exc:
        message = str(exc)
        if "\n" in message or not message.startswith(f"{path}: ") or len(message) > 1500:
            return f"bad message: {message[:300]}"
        if verdict == ACCEPT:
            return f"wrong refusal: {message[:300]}"
        if field is not None and field not in message:
            return f"refused without naming {field!r}: {message[:300]}"
        return "refused"
    except Exception:  # noqa: BLE001 - counted and shown
        return "traceback: " + traceback.format_exc(limit=3)[-600:]
    if verdict == REFUSE:
        return "wrong accept"
    if genotype.to_dict()["cells"] != _expected_cells(payload):
        return "accepted other cells than written"
    _build(genotype)
    return "accepted"


def _known_fuzz(tmp_path: Path, seed: int, cases: int) -> tuple[dict, list[tuple]]:
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    classes: dict[str, int] = {}
    problems, samples = [], []
    for i in range(cases):
        name, payload, verdict, field, klass = known_mutation(rng)
        path = tmp_path / f"known{i:04d}.json"
        started = time.perf_counter()
        outcome = check_known(path, payload, verdict, field)
        assert time.perf_counter() - started < 5 * SECONDS_PER_CASE, f"case {i} ({name}) is slow"
        key = outcome if outcome in ("refused", "accepted") else outcome.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
        classes[klass] = classes.get(klass, 0) + 1
        if outcome not in ("refused", "accepted"):
            problems.append((i, name, outcome))
        elif len(samples) < 400:
            samples.append((path, outcome, field))
            continue
        path.unlink()
    assert not problems, "\n".join(f"case {i} ({name}): {outcome}" for i, name, outcome in problems[:10])
    return {"counts": counts, "classes": classes}, samples


def test_known_mutations_are_refused_or_loaded_as_written(tmp_path):
    stats, _ = _known_fuzz(tmp_path, SEED + 1, 150)
    counts, classes = stats["counts"], stats["classes"]
    print(f"\nknown genotype mutations: {counts}; classes {classes}")
    assert counts.get("refused", 0) >= 60 and counts.get("accepted", 0) >= 30
    for klass in ("cell kind missing", "duplicated edge", "wrong input count", "space/cells mismatch"):
        assert classes.get(klass, 0) >= 5, (klass, classes)


@pytest.mark.slow
def test_six_hundred_known_mutations_and_a_few_through_the_console(tmp_path):
    """The closing fuzz: 600 seeded mutations, 0 tracebacks, 0 wrong accepts, 0 wrong refusals; then a handful
    of the same files through the real ``nasrun show``."""
    started = time.perf_counter()
    stats, samples = _known_fuzz(tmp_path, SEED + 2, 600)
    elapsed = time.perf_counter() - started
    counts, classes = stats["counts"], stats["classes"]
    assert sum(counts.values()) == 600 and counts.get("refused", 0) >= 250 and counts.get("accepted", 0) >= 150
    rng = random.Random(SEED + 3)
    refused = [s for s in samples if s[1] == "refused"]
    accepted = [s for s in samples if s[1] == "accepted"]
    for path, outcome, field in rng.sample(refused, 4) + rng.sample(accepted, 2):
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        proc = subprocess.run([sys.executable, "-m", "nasrun", "show", f"genotype={path}", "recipe.C=4",
                               "recipe.layers=3" if outcome == "refused" else "recipe=quick"],
                              capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
        assert "Traceback" not in proc.stderr, proc.stderr
        if outcome == "refused":
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            assert proc.returncode == 2 and len(lines) == 1 and str(path) in lines[0], proc.stderr
            assert field is None or field in lines[0], (field, lines[0])
        else:
            assert proc.returncode == 0 and "parameters:" in proc.stdout, proc.stderr
    print(f"\nknown genotype mutations: 600 in {elapsed:.1f}s ({counts}), classes {classes}; 6 through nasrun show "
          f"in {time.perf_counter() - started - elapsed:.1f}s")
