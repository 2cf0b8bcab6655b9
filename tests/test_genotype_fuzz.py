"""Seeded fuzzing of genotype.json loading: every mutated file is accepted and builds, or is refused cleanly.

A genotype file is untrusted input. Whatever it holds, ``Genotype.load`` must either return a
genotype that NetworkCIFAR can build and run, or raise GenotypeError naming the file, and it
must do so quickly (a hang guard, not a benchmark).
"""

from __future__ import annotations

import json
import random
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from nasrun.errors import GenotypeError
from nasrun.genotype.genotype import PUBLISHED, Genotype
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
    """A valid cell: two [op, input] pairs per node, inputs from earlier states."""
    usable = [op for op in ops if op != "none"]
    return [[rng.choice(usable), rng.randint(0, i + 1)] for i in range(nodes) for _ in range(2)]


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
    """Often accepted: a different op of the vocabulary on a different earlier state."""
    cell, k = _pick_pair(rng, d)
    ops = [op for op in d.get("ops", DARTS_OPS) if op != "none"] if isinstance(d.get("ops"), list) else []
    if k is not None and ops:
        d[cell][k] = [rng.choice(ops), rng.randint(0, k // 2 + 1)]
    return d


def change_concat(rng, d):
    cell = rng.choice(["normal", "reduce"])
    nodes = d.get("nodes", 4) if isinstance(d.get("nodes"), int) else 4
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
