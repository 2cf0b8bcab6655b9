"""Validation of genotype files, field by field: every problem is one GenotypeError naming the file,
the field, the (shortened) value and what is allowed.

A genotype file is untrusted input: every check here is linear in the (bounded) size of a field,
huge integers are never converted, deep nesting is reported by field, and nothing is ever eval'd.
Format ``nasrun.genotype/1`` (shared DARTS cells as ``[op, input]`` pairs) and ``nasrun.genotype/2``
(named cells of ``[op, source, target]`` edges) are still read; ``nasrun.genotype/3`` is /2 plus the
description of the space the cells were searched in (``space_description``), so a genotype of a space
defined outside nasrun can be checked and retrained anywhere; ``nasrun.genotype/4`` is /3 plus the
``rule`` its cells were read off by (:data:`RULES`): the space's own rule, GDAS' strongest (op, input)
pairs (two ops may share an input) or FairDARTS' threshold (a node may keep no input). Whether the
cells fit their space is checked in :mod:`nasrun.genotype.fit`.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import reprlib
from collections import Counter
from typing import Any, Mapping, Sequence

from nasrun.errors import GenotypeError
from nasrun.spaces.names import OP_NAMES as OPS

FORMAT_V1 = "nasrun.genotype/1"
FORMAT_V2 = "nasrun.genotype/2"
FORMAT_V3 = "nasrun.genotype/3"
FORMAT = "nasrun.genotype/4"

#: How a genotype's cells were read off the supernet's weights (format /4's ``rule``; earlier files: ``space``).
#: ``space``: the space's derivation; ``pairs``: per node the strongest (op, input) pairs, which may share an
#: input (GDAS); ``threshold``: the space's strongest inputs, each kept only when its best op's weight reaches a
#: threshold, so a node may keep none (FairDARTS). The last two read two-input (DARTS-stacked) cells only.
RULES = ("space", "pairs", "threshold")
Pairs = tuple[tuple[str, int], ...]

_CELLS = ("normal", "reduce")
_REQUIRED_KEYS = ("format", "normal", "normal_concat", "reduce", "reduce_concat")
KEYS_V1 = ("format", "space", "ops", "nodes", "normal", "normal_concat", "reduce", "reduce_concat", "cells")

#: Bounds on what a genotype may ask for. A file is untrusted input: without them ``nodes: 2000``
#: makes the network build run for hours and a 100,000-entry list makes validation crawl.
MAX_NODES = 32
MAX_OPS = 64
MAX_NAME = 64
MAX_FILE_BYTES = 1 << 20
#: Longest integer literal read as a number; longer ones are kept as text (never converted).
_MAX_DIGITS = 100
#: Longest echo of a value in an error message.
SHOWN = 200


class _LongInteger:
    """An integer literal too long for any genotype field, kept by size only.

    Converting it would raise ValueError past Python's 4300-digit limit, before any field is
    known; kept unconverted it reaches the field's own check, which refuses it by name.
    """

    __slots__ = ("digits",)

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"<integer with {self.digits} digits>"


def parse_int(text: str) -> int | _LongInteger:
    return int(text) if len(text) <= _MAX_DIGITS else _LongInteger(text)


class _Repr(reprlib.Repr):
    """reprlib with bounded depth and width that also survives huge integers."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 10
        self.maxstring = self.maxother = 120

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 4 * _MAX_DIGITS:
            return f"<integer with ~{int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


_REPR = _Repr()


def short(value: Any, limit: int = SHOWN) -> str:
    """The repr of a value to echo in a message, cut to ``limit`` characters with "...".

    Values come from files: they may be megabytes long, nested a thousand levels or have more
    digits than ``str(int)`` accepts, and a message must stay one readable line.
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # a value whose repr itself fails must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, _LongInteger)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_integer(v: Any) -> bool:
    """An integer literal, including one too long to have been converted."""
    return _is_int(v) or isinstance(v, _LongInteger)


def _in_range(v: Any, low: int, high: int) -> bool:
    return _is_int(v) and low <= v <= high


@functools.lru_cache(maxsize=None)
def known_spaces() -> tuple[str, ...]:
    """The option names of the Hydra config group ``space`` (``nasrun/conf/space/*.yaml``).

    These are the spaces a search can run in, so the only ones a genotype file may name.
    ``darts``, the default, is always known.
    """
    try:
        folder = importlib.resources.files("nasrun.conf") / "space"
        names = {p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")}
    except (OSError, ModuleNotFoundError):
        names = set()
    return tuple(sorted(names | {"darts"}))


def _error(source: str, where: str, msg: str) -> GenotypeError:
    return GenotypeError(f"{source}: {where}: {msg}")


def check_space_name(space: Any, source: str, known_only: bool) -> None:
    """Space names are labels; a file must use one of the known spaces (``known_only``)."""
    known = ", ".join(known_spaces())
    if not isinstance(space, str) or not space.strip() or len(space) > MAX_NAME:
        raise _error(
            source, "space",
            f"expected a non-empty string (a space name of at most {MAX_NAME} characters), got {short(space)}; "
            f"known spaces: {known}",
        )
    if known_only and space not in known_spaces():
        raise _error(
            source, "space",
            f"unknown space {short(space)}; known spaces: {known} (the files in nasrun/conf/space/), or any space "
            f"whose description the file carries (space_description, written by nasrun search since {FORMAT_V3})",
        )


def check_ops(ops: Any, source: str) -> None:
    """The op vocabulary: 1..MAX_OPS distinct names nasrun can build (checked in linear time)."""
    known = ", ".join(OPS)
    if not isinstance(ops, (list, tuple)) or not ops:
        raise _error(source, "ops", f"expected a non-empty list of op names, got {short(ops)}; known ops: {known}")
    if len(ops) > MAX_OPS:
        raise _error(source, "ops", f"{len(ops)} entries, at most {MAX_OPS} are allowed (known ops: {known})")
    for k, op in enumerate(ops):
        if not isinstance(op, str):
            raise _error(source, f"ops[{k}]", f"expected an op name (string), got {short(op)}; known ops: {known}")
        if op not in OPS:
            raise _error(source, f"ops[{k}]", f"unknown op {short(op)}; known ops: {known}")
    repeated = [op for op, n in Counter(ops).items() if n > 1]
    if repeated:
        raise _error(source, "ops", f"op names must be distinct, repeated: {', '.join(sorted(repeated))}")


def check_nodes(nodes: Any, source: str) -> None:
    allowed = f"allowed: 1..{MAX_NODES} nodes per cell (DARTS cells have 4)"
    if not _is_integer(nodes) or (_is_int(nodes) and nodes < 1):
        raise _error(source, "nodes", f"expected an integer >= 1, got {short(nodes)}; {allowed}")
    if not _in_range(nodes, 1, MAX_NODES):
        raise _error(source, "nodes", f"{short(nodes)} nodes is out of range; {allowed}")


def _check_pair(pair: Any, node: int, ops: frozenset[str], shown_ops: str, where: str, source: str) -> None:
    """One ``[op, input]`` entry of node ``node``: an op of the vocabulary on an earlier state."""
    if (
        not isinstance(pair, (list, tuple))
        or len(pair) != 2
        or not isinstance(pair[0], str)
        or not _is_integer(pair[1])
    ):
        raise _error(source, where, f"expected [op, input] with op a string and input an integer, got {short(pair)}")
    op, src = pair
    if op not in ops:
        raise _error(source, where, f"op {short(op)} is not in ops {shown_ops}")
    if op == "none":
        raise _error(source, where, "op 'none' cannot be used in a cell (it means 'no edge'; drop the entry instead)")
    if not _in_range(src, 0, node + 1):
        raise _error(
            source, where,
            f"input {short(src)} is out of range for node {node} (state {node + 2}): "
            f"allowed 0..{node + 1} (0, 1 = cell inputs, 2.. = earlier nodes)",
        )


def _check_pairs(cell: str, pairs: Any, nodes: int, ops: Sequence[str], source: str) -> None:
    """Exactly two entries per node; the length is checked before any entry is looked at."""
    if not isinstance(pairs, (list, tuple)):
        raise _error(source, cell, f"expected a list of [op, input] pairs, got {short(pairs)}")
    if len(pairs) != 2 * nodes:
        raise _error(source, cell, f"expected {2 * nodes} entries (2 per node for {nodes} nodes), got {len(pairs)}")
    allowed, shown = frozenset(ops), short(list(ops))
    for k, pair in enumerate(pairs):
        _check_pair(pair, k // 2, allowed, shown, f"{cell}[{k}]", source)
        if k % 2 and pair[1] == pairs[k - 1][1]:
            raise _error(source, f"{cell}[{k}]", f"input {pair[1]} is also node {k // 2}'s other input "
                         f"({cell}[{k - 1}]); a node takes two different inputs (one op per edge)")


def _check_concat(cell: str, concat: Any, nodes: int, source: str) -> None:
    """Distinct states to concatenate; a reduction cell may only join its (halved) nodes.

    In a reduction cell states 0 and 1 keep the input resolution while every node is computed
    at half of it, so the network builder cannot concatenate them (nor can the next cell take a
    reduction output that was not halved).
    """
    where = f"{cell}_concat"
    if not isinstance(concat, (list, tuple)) or not concat:
        raise _error(source, where, f"expected a non-empty list of state indices, got {short(concat)}")
    if len(concat) > nodes + 2:
        raise _error(source, where, f"{len(concat)} entries, but a cell of {nodes} nodes has only {nodes + 2} states")
    low = 2 if cell == "reduce" else 0
    for k, idx in enumerate(concat):
        if not _in_range(idx, 0, nodes + 1):
            raise _error(source, f"{where}[{k}]", f"expected a state index in {low}..{nodes + 1}, got {short(idx)}")
        if idx < low:
            raise _error(
                source, f"{where}[{k}]",
                f"state {idx} is a cell input; a reduction cell's output can only concatenate its nodes "
                f"(states 2..{nodes + 1}), since the inputs are not halved and cannot be joined with them",
            )
    if len(set(concat)) != len(concat):
        raise _error(source, where, f"state indices must be distinct, got {short(list(concat))}")


def validate_v1(
    space: Any,
    ops: Any,
    nodes: Any,
    cells: Mapping[str, tuple[Any, Any]],
    source: str,
    known_space: bool = False,
) -> None:
    """Check every field; raise GenotypeError naming the source, the field, the value and what is allowed.

    Every check is linear in the (bounded) size of the field, so no file can hang it.
    """
    check_space_name(space, source, known_space)
    check_ops(ops, source)
    check_nodes(nodes, source)
    for cell, (pairs, concat) in cells.items():
        _check_pairs(cell, pairs, nodes, ops, source)
        _check_concat(cell, concat, nodes, source)


# ------------------------------------------------------------------ reading
def check_keys_v1(d: Any, source: str) -> None:
    """The payload is an object with the required keys, no unknown ones, this format and no ``cells``."""
    if not isinstance(d, Mapping):
        raise GenotypeError(
            f"{source}: expected a JSON object with keys {', '.join(KEYS_V1)}, got {_json_type(d)}"
        )
    unknown = [k for k in d if k not in KEYS_V1]
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        shown = ", ".join(short(k, 60) for k in unknown[:5]) + more
        raise GenotypeError(f"{source}: unknown key(s) {shown}; allowed keys: {', '.join(KEYS_V1)}")
    missing = [k for k in _REQUIRED_KEYS if k not in d]
    if missing:
        raise GenotypeError(f"{source}: missing key(s) {', '.join(map(repr, missing))}")
    if d.get("cells") is not None:
        raise GenotypeError(
            f"{source}: cells: per-cell genotypes are not supported by {FORMAT_V1}; "
            f"expected null, got {short(d['cells'])} (write format {FORMAT} for per-cell genotypes)"
        )


# ------------------------------------------------------------------ format /2
KEYS_V2 = ("format", "space", "space_hash", "ops", "nodes", "inputs", "cells", "nb201")
REQUIRED_V2 = ("format", "space", "ops", "nodes", "inputs", "cells")
CELL_KEYS = ("edges", "concat", "reduction")
#: At most this many cells (one per position of the deepest network nasrun builds).
MAX_CELLS = 1000
_CELL_NAME = re.compile(r"normal|reduce|cell(0|[1-9][0-9]{0,3})")


KEYS_V3 = (*KEYS_V2, "space_description")
KEYS_V4 = (*KEYS_V3, "rule")


def check_keys_v2(d: Mapping, source: str, keys: Sequence[str] = KEYS_V2) -> None:
    """The keys of a format /2 (/3 and /4 with their ``keys``) payload: the required ones, no unknown ones."""
    unknown = [k for k in d if k not in keys]
    if unknown:
        shown = ", ".join(short(k, 60) for k in unknown[:5])
        more = "".join(f" ({key} needs format {fmt!r} or later)" for key, fmt in
                       (("space_description", FORMAT_V3), ("rule", FORMAT)) if key in unknown and key not in keys)
        raise GenotypeError(f"{source}: unknown key(s) {shown}; allowed keys: {', '.join(keys)}{more}")
    missing = [k for k in REQUIRED_V2 if k not in d]
    if missing:
        raise GenotypeError(f"{source}: missing key(s) {', '.join(map(repr, missing))}")
    hash_ = d.get("space_hash")
    if hash_ is not None and not (isinstance(hash_, str) and re.fullmatch(r"[0-9a-f]{1,64}", hash_)):
        raise _error(source, "space_hash", f"expected null or a hexadecimal string, got {short(hash_)}")


def check_inputs(inputs: Any, source: str) -> None:
    if not _in_range(inputs, 1, 2):
        raise _error(source, "inputs", f"expected 1 (NB201 cells) or 2 (DARTS cells), got {short(inputs)}")


def check_rule(rule: Any, inputs: int, source: str) -> None:
    """A rule of :data:`RULES`; the pairs and threshold rules read two-input cells only."""
    if not isinstance(rule, str) or rule not in RULES:
        raise _error(source, "rule", f"expected one of {', '.join(RULES)}, got {short(rule)}")
    if rule != "space" and inputs != 2:
        raise _error(source, "rule", f"{rule} reads two-input (DARTS) cells; a one-input (NB201) genotype has rule "
                     "space")


def check_cells_v2(cells: Any, ops: Sequence[str], nodes: int, inputs: int, source: str, rule: str = "space") -> None:
    """Named cells, each a valid set of edges and outputs; shared cells or one per position, not both."""
    if not isinstance(cells, Mapping) or not cells:
        raise _error(source, "cells", f"expected an object of named cells, got {short(cells)}")
    if len(cells) > MAX_CELLS:
        raise _error(source, "cells", f"{len(cells)} cells, at most {MAX_CELLS} are allowed")
    names = list(cells)
    for name in names:
        if not isinstance(name, str) or not _CELL_NAME.fullmatch(name):
            raise _error(source, "cells", f"cell name {short(name)} is not allowed: normal, reduce or cell<i>")
    shared = [n for n in names if not n.startswith("cell")]
    if shared and len(shared) != len(names):
        raise _error(source, "cells", "either shared cells (normal, reduce) or one per position (cell<i>), not both")
    if not shared and sorted(names, key=lambda n: int(n[4:])) != [f"cell{i}" for i in range(len(names))]:
        raise _error(source, "cells", f"per-position cells must be cell0..cell{len(names) - 1}, got {short(names)}")
    _check_cell_kinds(names, bool(shared), inputs, source)
    allowed = frozenset(ops)
    for name in names:
        check_cell_v2(cells[name], name, allowed, nodes, inputs, source, rule)


#: The shared cells a network needs, by cell inputs: the DARTS stack (2 inputs) places a normal cell and
#: reduction cells; NB201's skeleton (1 input) repeats one cell and reduces in its residual blocks.
SHARED_KINDS = {2: ("normal", "reduce"), 1: ("normal",)}


def _check_cell_kinds(names: Sequence[str], shared: bool, inputs: int, source: str) -> None:
    """Every cell kind the network needs is there (before anything is built), and none it cannot place."""
    needed = SHARED_KINDS[inputs]
    what = "a two-input (DARTS) genotype" if inputs == 2 else "a one-input (NB201) genotype"
    if not shared:
        if inputs == 1:
            raise _error(source, "cells", f"{what} has one shared cell named normal, not one cell per position "
                         f"(got {short(list(names))})")
        return
    for kind in needed:
        if kind not in names:
            need = " and a ".join(needed)
            raise _error(source, f"cells.{kind}", f"missing: {what} needs a {need} cell"
                         + (" (or one cell per position, cell0, cell1, ...)" if inputs == 2 else ""))
    for name in names:
        if name not in needed:
            raise _error(source, f"cells.{name}", f"{what} has no {name} cell (its cells: {', '.join(needed)})")


def check_cell_v2(cell: Any, name: str, ops: frozenset, nodes: int, inputs: int, source: str,
                  rule: str = "space") -> None:
    where = f"cells.{name}"
    if not isinstance(cell, Mapping):
        raise _error(source, where, f"expected an object with keys {', '.join(CELL_KEYS)}, got {short(cell)}")
    unknown = [k for k in cell if k not in CELL_KEYS]
    if unknown or "edges" not in cell or "concat" not in cell:
        raise _error(source, where, f"expected the keys {', '.join(CELL_KEYS)} (reduction optional), got "
                     f"{short(list(cell))}")
    reduction = cell.get("reduction", name == "reduce")
    if not isinstance(reduction, bool) or (name in ("normal", "reduce") and reduction != (name == "reduce")):
        raise _error(source, f"{where}.reduction", f"expected {str(name == 'reduce').lower()} for the {name} cell, "
                     f"got {short(reduction)}" if name in ("normal", "reduce") else f"expected true or false, got "
                     f"{short(reduction)}")
    fed = _check_edges(cell["edges"], f"{where}.edges", ops, nodes, inputs, source, rule)
    _check_concat_v2(cell["concat"], f"{where}.concat", nodes, inputs, reduction, source, fed)


def _check_edges(edges: Any, where: str, ops: frozenset, nodes: int, inputs: int, source: str,
                 rule: str = "space") -> set[int]:
    """``[op, source, target]`` edges: known ops, earlier sources, each (source, target) edge at most once with
    one op (under the pairs rule: each (op, source, target) at most once), every node fed (under the threshold
    rule: a node may be unfed, and then no edge reads it); an NB201 cell has every edge. Returns the fed nodes."""
    most = sum(inputs + i for i in range(nodes))
    limit = most * len(ops) if rule == "pairs" else most
    if not isinstance(edges, (list, tuple)) or not edges:
        raise _error(source, where, f"expected a non-empty list of [op, source, target] edges, got {short(edges)}")
    if len(edges) > limit:
        raise _error(source, where, f"{len(edges)} edges, but {nodes} nodes with {inputs} inputs have {most} "
                     f"possible ones ({'each with at most every op' if rule == 'pairs' else 'one op each'})")
    seen: set[tuple] = set()
    for k, edge in enumerate(edges):
        at = f"{where}[{k}]"
        if (not isinstance(edge, (list, tuple)) or len(edge) != 3 or not isinstance(edge[0], str)
                or not _is_int(edge[1]) or not _is_int(edge[2])):
            raise _error(source, at, f"expected [op, source, target] with integer states, got {short(edge)}")
        op, src, dst = edge
        if op not in ops:
            raise _error(source, at, f"op {short(op)} is not in ops {short(sorted(ops))}")
        if op == "none" and inputs != 1:
            raise _error(source, at, "op 'none' is not an edge of a DARTS cell (leave the edge out instead)")
        if not _in_range(dst, inputs, inputs + nodes - 1):
            raise _error(source, at, f"target {dst} is not a node: allowed {inputs}..{inputs + nodes - 1}")
        if not _in_range(src, 0, dst - 1):
            raise _error(source, at, f"source {src} must be an earlier state than the target {dst} (0..{dst - 1})")
        key = (op, src, dst) if rule == "pairs" else (src, dst)
        if key in seen:
            raise _error(source, at, _repeated(op, src, dst, rule, inputs))
        seen.add(key)
    fed = {int(e[2]) for e in edges}
    _check_fed(edges, where, fed, nodes, inputs, source, rule)
    if inputs == 1 and len(seen) != most:
        raise _error(source, where, f"an NB201 cell has every edge (op 'none' for an absent one): {most} edges, "
                     f"got {len(seen)}")
    return fed


def _repeated(op: str, src: int, dst: int, rule: str, inputs: int) -> str:
    if rule == "pairs":
        return f"a second {op} edge from state {src} to node {dst}; the pairs rule keeps each (op, input) pair once"
    more = "" if inputs == 1 else " (a genotype with rule pairs may repeat an input)"
    return f"a second edge from state {src} to node {dst}; a cell keeps each edge at most once, with one op{more}"


def _check_fed(edges: Any, where: str, fed: set[int], nodes: int, inputs: int, source: str, rule: str) -> None:
    """Every node has an incoming edge; under the threshold rule an unfed node is allowed, but read by no edge."""
    if rule != "threshold":
        for node in range(inputs, inputs + nodes):
            if node not in fed:
                raise _error(source, where, f"node {node} has no incoming edge")
        return
    for k, (_, src, dst) in enumerate(edges):
        if src >= inputs and src not in fed:
            raise _error(source, f"{where}[{k}]", f"source {src} is a node with no incoming edge; an unfed node "
                         f"feeds nothing (node {dst} cannot read it)")


def _check_concat_v2(concat: Any, where: str, nodes: int, inputs: int, reduction: bool, source: str,
                     fed: set[int] | None = None) -> None:
    states = inputs + nodes
    if not isinstance(concat, (list, tuple)) or not concat or len(concat) > states:
        raise _error(source, where, f"expected a non-empty list of at most {states} state indices, got "
                     f"{short(concat)}")
    low = inputs if reduction or inputs == 1 else 0
    for k, idx in enumerate(concat):
        if not _in_range(idx, low, states - 1):
            raise _error(source, f"{where}[{k}]", f"expected a state index in {low}..{states - 1}, got {short(idx)}")
    if len(set(concat)) != len(concat):
        raise _error(source, where, f"state indices must be distinct, got {short(list(concat))}")
    unfed = [idx for idx in concat if fed is not None and idx >= inputs and idx not in fed]
    if unfed:
        raise _error(source, where, f"node {unfed[0]} has no incoming edge, so the cell cannot output it")
    if inputs == 1 and list(concat) != [states - 1]:
        raise _error(source, where, f"an NB201 cell outputs its last node: expected [{states - 1}]")
