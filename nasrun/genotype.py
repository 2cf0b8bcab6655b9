"""Genotypes: the discrete cell architectures a search produces and a retrain consumes.

A genotype is plain data. It is derived from the mixing weights (spaces.md §1.5), written
as schema-versioned JSON (never eval, never pickle), validated field by field when read so a
broken file is reported precisely, and the published DARTS-family cells are available by name.
"""

from __future__ import annotations

import json
import os
import tempfile
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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate(
    space: Any,
    ops: Any,
    nodes: Any,
    cells: Mapping[str, tuple[Any, Any]],
    source: str,
) -> None:
    """Check every field; raise GenotypeError naming the source, the field and the problem."""

    def fail(where: str, msg: str) -> None:
        raise GenotypeError(f"{source}: {where}: {msg}")

    if not isinstance(space, str) or not space:
        fail("space", f"expected a non-empty string, got {space!r}")
    if not isinstance(ops, (list, tuple)) or not ops:
        fail("ops", f"expected a non-empty list of op names, got {ops!r}")
    for k, op in enumerate(ops):
        if not isinstance(op, str):
            fail(f"ops[{k}]", f"expected an op name (string), got {op!r}")
        if op not in OPS:
            fail(f"ops[{k}]", f"unknown op {op!r}; known ops: {', '.join(OPS)}")
    if len(set(ops)) != len(ops):
        dup = sorted({op for op in ops if list(ops).count(op) > 1})
        fail("ops", f"op names must be distinct, repeated: {', '.join(dup)}")
    if not _is_int(nodes) or nodes < 1:
        fail("nodes", f"expected an integer >= 1, got {nodes!r}")
    op_list = list(ops)

    for cell, (pairs, concat) in cells.items():
        if not isinstance(pairs, (list, tuple)):
            fail(cell, f"expected a list of [op, input] pairs, got {pairs!r}")
        if len(pairs) != 2 * nodes:
            fail(cell, f"expected {2 * nodes} entries (2 per node for {nodes} nodes), got {len(pairs)}")
        for k, pair in enumerate(pairs):
            where = f"{cell}[{k}]"
            if (
                not isinstance(pair, (list, tuple))
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not _is_int(pair[1])
            ):
                fail(where, f"expected [op, input] with op a string and input an integer, got {pair!r}")
            op, src = pair
            if op not in op_list:
                fail(where, f"op {op!r} is not in ops {op_list}")
            if op == "none":
                fail(where, "op 'none' cannot be used in a cell (it means 'no edge'; drop the entry instead)")
            node = k // 2
            if not 0 <= src <= node + 1:
                fail(
                    where,
                    f"input {src} is out of range for node {node} (state {node + 2}): "
                    f"allowed 0..{node + 1} (0, 1 = cell inputs, 2.. = earlier nodes)",
                )
        where = f"{cell}_concat"
        if not isinstance(concat, (list, tuple)) or not concat:
            fail(where, f"expected a non-empty list of state indices, got {concat!r}")
        for k, idx in enumerate(concat):
            if not _is_int(idx) or not 0 <= idx <= nodes + 1:
                fail(f"{where}[{k}]", f"expected a state index in 0..{nodes + 1}, got {idx!r}")
        if len(set(concat)) != len(concat):
            fail(where, f"state indices must be distinct, got {list(concat)}")


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
        absent or null (per-cell genotypes are not supported by this format version).
        ``source`` prefixes every error message (the file name when loading).
        """
        if not isinstance(d, Mapping):
            raise GenotypeError(
                f"{source}: expected a JSON object with keys {', '.join(_ALL_KEYS)}, got {type(d).__name__}"
            )
        unknown = [k for k in d if k not in _ALL_KEYS]
        if unknown:
            raise GenotypeError(
                f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: {', '.join(_ALL_KEYS)}"
            )
        missing = [k for k in _REQUIRED_KEYS if k not in d]
        if missing:
            raise GenotypeError(f"{source}: missing key(s) {', '.join(map(repr, missing))}")
        if d["format"] != FORMAT:
            raise GenotypeError(f"{source}: format: expected {FORMAT!r}, got {d['format']!r}")
        if d.get("cells") is not None:
            raise GenotypeError(
                f"{source}: cells: per-cell genotypes are not supported by {FORMAT}; expected null"
            )
        space = d.get("space", "darts")
        ops = d.get("ops", list(DARTS_OPS))
        nodes = d.get("nodes", 4)
        cells = {c: (d[c], d[f"{c}_concat"]) for c in _CELLS}
        _validate(space, ops, nodes, cells, source)
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
        if not path.exists():
            raise GenotypeError(f"{path}: no such file")
        if path.is_dir():
            raise GenotypeError(f"{path}: is a folder, expected a genotype.json file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise GenotypeError(f"{path}: not a text (UTF-8) file: {e.reason} at byte {e.start}") from None
        except OSError as e:
            raise GenotypeError(f"{path}: cannot be read: {e.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GenotypeError(
                f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
            ) from None
        return cls.from_dict(data, source=str(path))

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


def _unfinished_reason(folder: Path) -> str:
    result = folder / "result.json"
    if result.is_file():
        try:
            data = json.loads(result.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "result.json exists but cannot be read"
        if isinstance(data, Mapping):
            status = data.get("status", "unknown")
            reason = data.get("reason")
            return f"result.json status: {status}" + (f" ({reason})" if reason else "")
        return "result.json is not a JSON object"
    if (folder / ".hydra" / "config.yaml").is_file():
        return "no result.json: it is still running or was interrupted"
    return ""


def resolve_genotype(spec: str) -> tuple[Genotype, Path | None]:
    """Turn a ``genotype=`` value into a genotype and, when it came from one, its search run folder.

    Accepted: a published name (exact, or case-insensitive when unambiguous), a path to a
    genotype.json file, or a search run folder holding ``genotype.json``. The folder is
    returned so a retrain can reuse the search's settings; it is None for published names and
    for files that are not inside a run folder (one with ``.hydra/config.yaml``).
    """
    if spec in PUBLISHED:
        return PUBLISHED[spec], None
    path = Path(spec).expanduser()
    if path.is_dir():
        target = path / "genotype.json"
        if target.is_file():
            return Genotype.load(target), path
        reason = _unfinished_reason(path)
        if reason:
            raise GenotypeError(
                f"genotype={spec!r}: the folder has no genotype.json, so the search did not finish ({reason})"
            )
        raise GenotypeError(
            f"genotype={spec!r}: the folder has no genotype.json and is not a search run folder; "
            f"expected {_allowed()}"
        )
    if path.is_file():
        genotype = Genotype.load(path)
        parent = path.parent
        return genotype, (parent if (parent / ".hydra" / "config.yaml").is_file() else None)
    matches = [name for name in PUBLISHED if name.lower() == spec.lower()]
    if len(matches) == 1:
        return PUBLISHED[matches[0]], None
    looks_like_path = os.sep in spec or "/" in spec or spec.endswith(".json")
    what = "no such file or folder" if looks_like_path else "not a published genotype name"
    raise GenotypeError(f"genotype={spec!r}: {what}; expected {_allowed()}")
