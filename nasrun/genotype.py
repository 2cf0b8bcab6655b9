"""Genotypes: the discrete cell architectures a search produces and a retrain consumes.

A genotype is plain data. It is derived from the mixing weights (spaces.md §1.5), written
as schema-versioned JSON (never eval, never pickle), validated field by field when read so a
broken file is reported precisely, and the published DARTS-family cells are available by name.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import re
import reprlib
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from nasrun.errors import GenotypeError
from nasrun.spaces.ops import DARTS_OPS, OPS, PARAMETER_FREE_OPS

FORMAT = "nasrun.genotype/1"

Pairs = tuple[tuple[str, int], ...]

_CELLS = ("normal", "reduce")
_REQUIRED_KEYS = ("format", "normal", "normal_concat", "reduce", "reduce_concat")
_ALL_KEYS = ("format", "space", "ops", "nodes", "normal", "normal_concat", "reduce", "reduce_concat", "cells")

#: Bounds on what a genotype may ask for. A file is untrusted input: without them ``nodes: 2000``
#: makes the network build run for hours and a 100,000-entry list makes validation crawl.
MAX_NODES = 32
MAX_OPS = 64
MAX_NAME = 64
MAX_FILE_BYTES = 1 << 20
#: Longest integer literal read as a number; longer ones are kept as text (never converted).
_MAX_DIGITS = 100
#: Longest echo of a value in an error message.
_SHOWN = 200


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


def _parse_int(text: str) -> int | _LongInteger:
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


def _short(value: Any, limit: int = _SHOWN) -> str:
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


def _check_space(space: Any, source: str, known_only: bool) -> None:
    """Space names are labels; a file must use one of the known spaces (``known_only``)."""
    known = ", ".join(known_spaces())
    if not isinstance(space, str) or not space.strip() or len(space) > MAX_NAME:
        raise _error(
            source, "space",
            f"expected a non-empty string (a space name of at most {MAX_NAME} characters), got {_short(space)}; "
            f"known spaces: {known}",
        )
    if known_only and space not in known_spaces():
        raise _error(
            source, "space",
            f"unknown space {_short(space)}; known spaces: {known} (the files in nasrun/conf/space/)",
        )


def _check_ops(ops: Any, source: str) -> None:
    """The op vocabulary: 1..MAX_OPS distinct names nasrun can build (checked in linear time)."""
    known = ", ".join(OPS)
    if not isinstance(ops, (list, tuple)) or not ops:
        raise _error(source, "ops", f"expected a non-empty list of op names, got {_short(ops)}; known ops: {known}")
    if len(ops) > MAX_OPS:
        raise _error(source, "ops", f"{len(ops)} entries, at most {MAX_OPS} are allowed (known ops: {known})")
    for k, op in enumerate(ops):
        if not isinstance(op, str):
            raise _error(source, f"ops[{k}]", f"expected an op name (string), got {_short(op)}; known ops: {known}")
        if op not in OPS:
            raise _error(source, f"ops[{k}]", f"unknown op {_short(op)}; known ops: {known}")
    repeated = [op for op, n in Counter(ops).items() if n > 1]
    if repeated:
        raise _error(source, "ops", f"op names must be distinct, repeated: {', '.join(sorted(repeated))}")


def _check_nodes(nodes: Any, source: str) -> None:
    allowed = f"allowed: 1..{MAX_NODES} nodes per cell (DARTS cells have 4)"
    if not _is_integer(nodes) or (_is_int(nodes) and nodes < 1):
        raise _error(source, "nodes", f"expected an integer >= 1, got {_short(nodes)}; {allowed}")
    if not _in_range(nodes, 1, MAX_NODES):
        raise _error(source, "nodes", f"{_short(nodes)} nodes is out of range; {allowed}")


def _check_pair(pair: Any, node: int, ops: frozenset[str], shown_ops: str, where: str, source: str) -> None:
    """One ``[op, input]`` entry of node ``node``: an op of the vocabulary on an earlier state."""
    if (
        not isinstance(pair, (list, tuple))
        or len(pair) != 2
        or not isinstance(pair[0], str)
        or not _is_integer(pair[1])
    ):
        raise _error(source, where, f"expected [op, input] with op a string and input an integer, got {_short(pair)}")
    op, src = pair
    if op not in ops:
        raise _error(source, where, f"op {_short(op)} is not in ops {shown_ops}")
    if op == "none":
        raise _error(source, where, "op 'none' cannot be used in a cell (it means 'no edge'; drop the entry instead)")
    if not _in_range(src, 0, node + 1):
        raise _error(
            source, where,
            f"input {_short(src)} is out of range for node {node} (state {node + 2}): "
            f"allowed 0..{node + 1} (0, 1 = cell inputs, 2.. = earlier nodes)",
        )


def _check_pairs(cell: str, pairs: Any, nodes: int, ops: Sequence[str], source: str) -> None:
    """Exactly two entries per node; the length is checked before any entry is looked at."""
    if not isinstance(pairs, (list, tuple)):
        raise _error(source, cell, f"expected a list of [op, input] pairs, got {_short(pairs)}")
    if len(pairs) != 2 * nodes:
        raise _error(source, cell, f"expected {2 * nodes} entries (2 per node for {nodes} nodes), got {len(pairs)}")
    allowed, shown = frozenset(ops), _short(list(ops))
    for k, pair in enumerate(pairs):
        _check_pair(pair, k // 2, allowed, shown, f"{cell}[{k}]", source)


def _check_concat(cell: str, concat: Any, nodes: int, source: str) -> None:
    """Distinct states to concatenate; a reduction cell may only join its (halved) nodes.

    In a reduction cell states 0 and 1 keep the input resolution while every node is computed
    at half of it, so the network builder cannot concatenate them (nor can the next cell take a
    reduction output that was not halved).
    """
    where = f"{cell}_concat"
    if not isinstance(concat, (list, tuple)) or not concat:
        raise _error(source, where, f"expected a non-empty list of state indices, got {_short(concat)}")
    if len(concat) > nodes + 2:
        raise _error(source, where, f"{len(concat)} entries, but a cell of {nodes} nodes has only {nodes + 2} states")
    low = 2 if cell == "reduce" else 0
    for k, idx in enumerate(concat):
        if not _in_range(idx, 0, nodes + 1):
            raise _error(source, f"{where}[{k}]", f"expected a state index in {low}..{nodes + 1}, got {_short(idx)}")
        if idx < low:
            raise _error(
                source, f"{where}[{k}]",
                f"state {idx} is a cell input; a reduction cell's output can only concatenate its nodes "
                f"(states 2..{nodes + 1}), since the inputs are not halved and cannot be joined with them",
            )
    if len(set(concat)) != len(concat):
        raise _error(source, where, f"state indices must be distinct, got {_short(list(concat))}")


def _validate(
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
    _check_space(space, source, known_space)
    _check_ops(ops, source)
    _check_nodes(nodes, source)
    for cell, (pairs, concat) in cells.items():
        _check_pairs(cell, pairs, nodes, ops, source)
        _check_concat(cell, concat, nodes, source)


# ------------------------------------------------------------------ reading
def _check_keys(d: Any, source: str) -> None:
    """The payload is an object with the required keys, no unknown ones, this format and no ``cells``."""
    if not isinstance(d, Mapping):
        raise GenotypeError(
            f"{source}: expected a JSON object with keys {', '.join(_ALL_KEYS)}, got {_json_type(d)}"
        )
    unknown = [k for k in d if k not in _ALL_KEYS]
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        shown = ", ".join(_short(k, 60) for k in unknown[:5]) + more
        raise GenotypeError(f"{source}: unknown key(s) {shown}; allowed keys: {', '.join(_ALL_KEYS)}")
    missing = [k for k in _REQUIRED_KEYS if k not in d]
    if missing:
        raise GenotypeError(f"{source}: missing key(s) {', '.join(map(repr, missing))}")
    if d["format"] != FORMAT:
        raise GenotypeError(f"{source}: format: expected {FORMAT!r}, got {_short(d['format'])}")
    if d.get("cells") is not None:
        raise GenotypeError(
            f"{source}: cells: per-cell genotypes are not supported by {FORMAT}; "
            f"expected null, got {_short(d['cells'])}"
        )


def _read_text(path: Path) -> str:
    """The file's text, refusing what no genotype is: folders, pipes, huge files, non-UTF-8, empty."""
    try:
        if not path.exists():
            raise GenotypeError(f"{path}: no such file")
        if path.is_dir():
            raise GenotypeError(f"{path}: is a folder, expected a genotype.json file")
        if not path.is_file():
            raise GenotypeError(f"{path}: not a regular file (a pipe or a device?), expected a genotype.json file")
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise GenotypeError(f"{path}: cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise GenotypeError(
            f"{path}: larger than {MAX_FILE_BYTES} bytes; a genotype.json is a few kilobytes "
            f"(at most {MAX_NODES} nodes and {MAX_OPS} ops)"
        )
    try:
        text = raw.decode("utf-8-sig")  # tolerate the byte-order mark some editors add
    except UnicodeDecodeError as e:
        raise GenotypeError(f"{path}: not a text (UTF-8) file: {e.reason} at byte {e.start}") from None
    if not text.strip():
        raise GenotypeError(f"{path}: the file is empty; expected a JSON object with keys {', '.join(_ALL_KEYS)}")
    return text


def _parse_json(text: str, path: Path) -> Any:
    """JSON only (never eval or pickle); long integers stay unconverted, deep nesting is reported."""
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise GenotypeError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise GenotypeError(
            f"{path}: {_deepest_field(text)}: nested too deeply; a genotype needs 3 levels "
            "(the object, a list of pairs, an [op, input] pair)"
        ) from None
    except ValueError as e:  # any other number the parser refuses
        raise GenotypeError(f"{path}: not valid JSON: {_short(str(e))}") from None


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:,]')


def _deepest_field(text: str) -> str:
    """The field (``key`` or ``key[i]``) holding the deepest nesting, found by one linear scan.

    Used only after the JSON parser gave up on the depth, so the message can still name the field.
    """
    depth = deepest = index = 0
    key, last, where = None, None, "the top-level value"
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok in ("[", "{"):
            depth += 1
            index = 0 if depth == 2 else index
            if depth > deepest:
                deepest = depth
                where = where if key is None else (key if depth == 2 else f"{key}[{index}]")
        elif tok in ("]", "}"):
            depth -= 1
        elif tok == ",":
            index += depth == 2
        elif tok == ":":
            key = last[1:-1][:60] if depth == 1 and last else key
        else:
            last = tok
    return where


@dataclass(frozen=True)
class Genotype:
    """Normal and reduction cell of a shared-cell space: two ``(op, input_state)`` pairs per node.

    Pairs ``2i`` and ``2i+1`` feed node ``i`` (state ``i + 2``); states 0 and 1 are the outputs
    of the two previous cells. ``*_concat`` lists the states concatenated into the cell output.
    ``ops`` is the space's op vocabulary, kept so a file says what it was searched over.
    Constructing one validates it (lists are accepted and stored as tuples).
    """

    normal: Pairs
    normal_concat: tuple[int, ...]
    reduce: Pairs
    reduce_concat: tuple[int, ...]
    space: str = "darts"
    ops: tuple[str, ...] = DARTS_OPS
    nodes: int = 4

    def __post_init__(self) -> None:
        def pairs(v: Any) -> Any:
            if isinstance(v, (list, tuple)):
                return tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in v)
            return v

        def flat(v: Any) -> Any:
            return tuple(v) if isinstance(v, (list, tuple)) else v

        for name in _CELLS:
            object.__setattr__(self, name, pairs(getattr(self, name)))
            object.__setattr__(self, f"{name}_concat", flat(getattr(self, f"{name}_concat")))
        object.__setattr__(self, "ops", flat(self.ops))
        _validate(
            self.space,
            self.ops,
            self.nodes,
            {c: (getattr(self, c), getattr(self, f"{c}_concat")) for c in _CELLS},
            "Genotype",
        )

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """The ``genotype.json`` payload (JSON types only)."""
        return {
            "format": FORMAT,
            "space": self.space,
            "ops": list(self.ops),
            "nodes": self.nodes,
            "normal": [[op, src] for op, src in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, src] for op, src in self.reduce],
            "reduce_concat": list(self.reduce_concat),
            "cells": None,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "genotype") -> "Genotype":
        """Build from a ``genotype.json`` payload, checking every field.

        ``space``, ``ops`` and ``nodes`` may be left out (DARTS defaults); ``cells`` must be
        absent or null (per-cell genotypes are not supported by this format version). Unlike
        direct construction, ``space`` must be one of :func:`known_spaces`: a file may come from
        anywhere. ``source`` prefixes every error message (the file name when loading).
        """
        _check_keys(d, source)
        space = d.get("space", "darts")
        ops = d.get("ops", list(DARTS_OPS))
        nodes = d.get("nodes", 4)
        cells = {c: (d[c], d[f"{c}_concat"]) for c in _CELLS}
        _validate(space, ops, nodes, cells, source, known_space=True)
        return cls(
            normal=d["normal"],
            normal_concat=d["normal_concat"],
            reduce=d["reduce"],
            reduce_concat=d["reduce_concat"],
            space=space,
            ops=ops,
            nodes=nodes,
        )

    def to_json(self) -> str:
        """Pretty JSON with one ``[op, input]`` pair per line (readable and diff-friendly)."""
        lines = []
        for key, value in self.to_dict().items():
            if key in _CELLS:
                inner = ",\n".join(f"    {json.dumps(p)}" for p in value)
                text = f"[\n{inner}\n  ]"
            else:
                text = json.dumps(value)
            lines.append(f"  {json.dumps(key)}: {text}")
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``genotype.json`` atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Genotype":
        """Read and validate a ``genotype.json``; every problem is a GenotypeError naming the file."""
        path = Path(path)
        return cls.from_dict(_parse_json(_read_text(path), path), source=str(path))

    # ------------------------------------------------------------ summaries
    def _cell(self, cell: str) -> Pairs:
        if cell not in _CELLS:
            raise ValueError(f"cell must be 'normal' or 'reduce', got {cell!r}")
        return getattr(self, cell)

    def count(self, op: str, cell: str = "normal") -> int:
        """How many edges of ``cell`` use ``op`` (e.g. skip connections, a sign of collapse)."""
        return sum(1 for name, _ in self._cell(cell) if name == op)

    def count_parameter_free(self, cell: str = "normal") -> int:
        """Edges of ``cell`` whose op has no weights (pooling, skip, none, noise)."""
        return sum(1 for name, _ in self._cell(cell) if name in PARAMETER_FREE_OPS)

    def __str__(self) -> str:
        def describe(cell: str) -> str:
            pairs = self._cell(cell)
            nodes = []
            for i in range(self.nodes):
                (a, ja), (b, jb) = pairs[2 * i], pairs[2 * i + 1]
                nodes.append(f"{i + 2}={a}({ja})+{b}({jb})")
            concat = ",".join(map(str, getattr(self, f"{cell}_concat")))
            return f"  {cell}: " + "  ".join(nodes) + f"  -> concat[{concat}]"

        return f"Genotype[{self.space}, {self.nodes} nodes]\n" + describe("normal") + "\n" + describe("reduce")


# -------------------------------------------------------------- derivation
def _derive_cell(weights: Tensor, ops: Sequence[str], nodes: int, cell: str) -> Pairs:
    expected = (sum(2 + i for i in range(nodes)), len(ops))
    if tuple(weights.shape) != expected:
        raise ValueError(f"{cell} weights have shape {tuple(weights.shape)}, expected {expected}")
    W = weights.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(W).all()):
        raise ValueError(f"{cell} weights contain NaN or Inf; no genotype can be derived")
    candidates = [k for k, op in enumerate(ops) if op != "none"]
    if not candidates:
        raise ValueError("ops has no op other than 'none'; no genotype can be derived")
    rows = W.tolist()

    def best_op(row: list[float]) -> int:
        best = candidates[0]
        for k in candidates[1:]:
            if row[k] > row[best]:  # strict: ties keep the lower op index
                best = k
        return best

    pairs: list[tuple[str, int]] = []
    start = 0
    for i in range(nodes):
        sources = list(range(2 + i))
        strength = [max(rows[start + j][k] for k in candidates) for j in sources]
        # sorted() is stable: equally strong edges keep the lower source index first.
        kept = sorted(sources, key=lambda j: -strength[j])[:2]
        for j in kept:
            pairs.append((ops[best_op(rows[start + j])], j))
        start += len(sources)
    return tuple(pairs)


def derive(
    weights_normal: Tensor,
    weights_reduce: Tensor,
    ops: Sequence[str],
    nodes: int = 4,
    space: str = "darts",
) -> Genotype:
    """Discretise mixing weights (``[num_edges, len(ops)]`` per cell type) into a genotype.

    Per node: keep the 2 incoming edges whose best non-``none`` weight is largest (strongest
    first; ties -> lower source index first), and on each the non-``none`` op of largest weight
    (ties -> lower op index). ``none`` is excluded because it would otherwise win on edges the
    search wants to switch off, which says nothing about which op is best.
    """
    concat = tuple(range(2, 2 + nodes))
    return Genotype(
        normal=_derive_cell(weights_normal, ops, nodes, "normal"),
        normal_concat=concat,
        reduce=_derive_cell(weights_reduce, ops, nodes, "reduce"),
        reduce_concat=concat,
        space=space,
        ops=tuple(ops),
        nodes=nodes,
    )


# ---------------------------------------------------- published genotypes
# Transcribed from recipes.md §7 (the official repositories' genotypes.py).
def _published(normal: list[tuple[str, int]], reduce: list[tuple[str, int]]) -> Genotype:
    return Genotype(normal=tuple(normal), normal_concat=(2, 3, 4, 5), reduce=tuple(reduce), reduce_concat=(2, 3, 4, 5))


_DARTS_V1 = _published(
    [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
     ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
)
_DARTS_V2 = _published(
    [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
     ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
)
_PDARTS = _published(
    [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
     ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
    [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
     ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
)
_PC_DARTS_CIFAR = _published(
    [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
     ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
     ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
)
_PC_DARTS_IMAGE = _published(
    [("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
     ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
    [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
     ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)],
)

#: Published cells by name. DARTS is DARTS_V2 (second order); PCDARTS is PC_DARTS_cifar.
PUBLISHED: dict[str, Genotype] = {
    "DARTS_V1": _DARTS_V1,
    "DARTS_V2": _DARTS_V2,
    "DARTS": _DARTS_V2,
    "PDARTS": _PDARTS,
    "PC_DARTS_cifar": _PC_DARTS_CIFAR,
    "PCDARTS": _PC_DARTS_CIFAR,
    "PC_DARTS_image": _PC_DARTS_IMAGE,
}


# -------------------------------------------------------------- resolving
def _allowed() -> str:
    return f"a published name ({', '.join(PUBLISHED)}), a genotype.json file or a search run folder"


_UNREADABLE = object()


def _text(value: Any, limit: int = _SHOWN) -> str:
    """A string as is (cut to ``limit``), anything else as its short repr: for values from result.json."""
    return value[:limit] if isinstance(value, str) else _short(value, limit)


def _read_result(folder: Path) -> Any:
    """The folder's result.json: None when there is none, ``_UNREADABLE`` when it cannot be parsed."""
    path = folder / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return _UNREADABLE


def _retrain_evidence(folder: Path, result: Any) -> str | None:
    """Why a folder without genotype.json is a retrain run folder, or None when it is not one."""
    if isinstance(result, Mapping):
        config = result.get("config")
        if result.get("command") == "retrain":
            return "its result.json says command: retrain"
        if result.get("command") is None and isinstance(config, Mapping) and config.get("genotype"):
            return "its result.json records the config of a retraining"
    if (folder / "model.pt").is_file():
        return "it holds model.pt and no genotype.json"
    return None


def _unfinished_reason(result: Any, folder: Path) -> str:
    if result is _UNREADABLE:
        return "result.json exists but cannot be read"
    if result is not None:
        if isinstance(result, Mapping):
            status = _text(result.get("status", "unknown"), 60)
            reason = result.get("reason")
            return f"result.json status: {status}" + (f" ({_text(reason)})" if reason else "")
        return "result.json is not a JSON object"
    if (folder / ".hydra" / "config.yaml").is_file():
        return "no result.json: it is still running or was interrupted"
    return ""


def _folder_error(spec: str, folder: Path) -> GenotypeError:
    """Say what a folder without genotype.json is: a retraining, a pipeline job, an unfinished search."""
    head = f"genotype={_short(spec)}"
    result = _read_result(folder)
    evidence = _retrain_evidence(folder, result)
    if evidence:
        retrained = result.get("genotype_source") if isinstance(result, Mapping) else None
        note = f"; it retrained genotype={_text(retrained)}" if isinstance(retrained, str) else ""
        return GenotypeError(
            f"{head}: {folder} is a retrain run folder ({evidence}){note}; a retraining produces a model, "
            f"not a genotype. Expected a search run folder (one holding genotype.json), a genotype.json file "
            f"or a published name ({', '.join(PUBLISHED)})"
        )
    if (folder / "search" / "genotype.json").is_file():
        return GenotypeError(
            f"{head}: {folder} is a pipeline job folder; its genotype is in the search run folder {folder / 'search'}"
        )
    reason = _unfinished_reason(result, folder)
    if reason:
        return GenotypeError(f"{head}: the folder has no genotype.json, so the search did not finish ({reason})")
    return GenotypeError(
        f"{head}: the folder has no genotype.json and is not a search run folder; expected {_allowed()}"
    )


def _what_is(path: Path) -> str | None:
    """'folder', 'file' or None; a name the system refuses (too long, ...) is treated as absent."""
    try:
        return "folder" if path.is_dir() else "file" if path.exists() else None
    except OSError:
        return None


def resolve_genotype(spec: str) -> tuple[Genotype, Path | None]:
    """Turn a ``genotype=`` value into a genotype and, when it came from one, its search run folder.

    Accepted: a published name (exact, or case-insensitive when unambiguous), a path to a
    genotype.json file, or a search run folder holding ``genotype.json``. The folder is
    returned so a retrain can reuse the search's settings; it is None for published names and
    for files that are not inside a run folder (one with ``.hydra/config.yaml``).
    """
    if spec in PUBLISHED:
        return PUBLISHED[spec], None
    try:
        path = Path(spec).expanduser()
    except RuntimeError:  # "~user" of an unknown user: take it literally
        path = Path(spec)
    kind = _what_is(path)
    if kind == "folder":
        target = path / "genotype.json"
        if target.is_file():
            return Genotype.load(target), path
        raise _folder_error(spec, path)
    if kind == "file":
        genotype = Genotype.load(path)
        parent = path.parent
        return genotype, (parent if (parent / ".hydra" / "config.yaml").is_file() else None)
    matches = [name for name in PUBLISHED if name.lower() == spec.lower()]
    if len(matches) == 1:
        return PUBLISHED[matches[0]], None
    looks_like_path = os.sep in spec or "/" in spec or spec.endswith(".json")
    what = "no such file or folder" if looks_like_path else "not a published genotype name"
    raise GenotypeError(f"genotype={_short(spec)}: {what}; expected {_allowed()}")
