"""Genotypes: the discrete cell architectures a search produces and a retrain consumes.

A genotype is plain data: named cells, each a set of ``(op, source, target)`` edges between
states and the states it outputs. Shared DARTS cells are "normal" and "reduce"; an NB201 genotype
has one "normal" cell; a space with an independent cell per position has "cell0", "cell1", ...
It is derived from the mixing weights by the space's rule (``nasrun.spaces``), written as
schema-versioned JSON (never eval, never pickle) and validated field by field when read
(``nasrun.genotype.checks``); the published DARTS-family cells are available by name, and an
NB201 cell can be given as its arch string (``|nor_conv_3x3~0|+|...|``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from nasrun.errors import GenotypeError
from nasrun.genotype.checks import (
    FORMAT,
    FORMAT_V1,
    FORMAT_V2,
    FORMAT_V3,
    KEYS_V2,
    KEYS_V3,
    KEYS_V4,
    RULES,
    SHOWN,
    check_keys_v1,
    short,
    validate_v1,
    check_cells_v2,
    check_inputs,
    check_keys_v2,
    check_nodes,
    check_ops,
    check_rule,
    check_space_name,
    known_spaces,
)
from nasrun.genotype.fit import check_fits, described_space
from nasrun.genotype.reading import parse_json, read_text
from nasrun.run.files import atomic_write_text
from nasrun.spaces.ops import DARTS_OPS, NB201_OPS, PARAMETER_FREE_OPS

Pairs = tuple[tuple[str, int], ...]
Edge = tuple[str, int, int]

__all__ = ["Cell", "Genotype", "FORMAT", "FORMAT_V1", "FORMAT_V2", "FORMAT_V3", "RULES", "PUBLISHED", "NB201_OPS", "known_spaces", "parse_nb201",
           "resolve_genotype"]


@dataclass(frozen=True)
class Cell:
    """One cell: ``(op, source, target)`` edges (states ``0..inputs-1`` are the cell inputs, then the
    nodes) and the states it outputs (concatenated in a DARTS cell; the last node in NB201)."""

    edges: tuple[Edge, ...]
    concat: tuple[int, ...]
    reduction: bool = False

    @classmethod
    def from_pairs(cls, pairs: Sequence[Sequence[Any]], concat: Sequence[int], reduction: bool) -> "Cell":
        """A DARTS cell written as two ``(op, input)`` pairs per node (pairs 2i, 2i+1 feed state i+2)."""
        return cls(tuple((op, src, 2 + k // 2) for k, (op, src) in enumerate(pairs)), tuple(concat), reduction)

    def pairs(self) -> Pairs:
        return tuple((op, src) for op, src, _ in self.edges)

    def inputs_of(self, target: int) -> list[tuple[str, int]]:
        return [(op, src) for op, src, dst in self.edges if dst == target]

    def to_dict(self) -> dict[str, Any]:
        return {"edges": [list(e) for e in self.edges], "concat": list(self.concat), "reduction": self.reduction}


class Genotype:
    """Named cells plus what they were searched over (space, op vocabulary, nodes, inputs).

    ``Genotype(normal=pairs, normal_concat=..., reduce=..., reduce_concat=...)`` builds a shared
    DARTS genotype from ``(op, input)`` pairs, two per node; ``Genotype(cells={...}, ...)`` any
    other. Construction validates; genotypes are immutable and compare by content. ``space_hash``
    and ``space_description`` (the space's fields, see :meth:`with_space`) say where it comes from,
    ``rule`` how its cells were read off the weights (one of :data:`RULES`; the checks follow it).
    """

    def __init__(self, normal: Any = None, normal_concat: Any = None, reduce: Any = None, reduce_concat: Any = None,
                 space: str = "darts", ops: Sequence[str] = DARTS_OPS, nodes: int = 4, *,
                 cells: Optional[Mapping[str, Cell]] = None, inputs: int = 2, space_hash: Optional[str] = None,
                 space_description: Optional[Mapping[str, Any]] = None, source: str = "Genotype",
                 rule: str = "space") -> None:
        ops = tuple(ops)
        if cells is None:
            validate_v1(space, list(ops), nodes, {"normal": (normal, normal_concat), "reduce": (reduce, reduce_concat)},
                      source)
            cells = {"normal": Cell.from_pairs(normal, normal_concat, False),
                     "reduce": Cell.from_pairs(reduce, reduce_concat, True)}
        else:
            check_space_name(space, source, known_only=False)
            check_ops(list(ops), source)
            check_nodes(nodes, source)
            check_inputs(inputs, source)
            check_rule(rule, inputs, source)
            check_cells_v2({k: c.to_dict() for k, c in cells.items()}, ops, nodes, inputs, source, rule)
        self.cells: dict[str, Cell] = dict(cells)
        self.rule = rule
        self.space, self.ops, self.nodes, self.inputs, self.space_hash = space, ops, nodes, inputs, space_hash
        self.space_description = None if space_description is None else json.loads(json.dumps(space_description))

    def with_space(self, space: Any) -> "Genotype":
        """This genotype carrying the description of the space it was derived in (what genotype.json records,
        so that a space defined outside nasrun's own files can be checked and retrained anywhere)."""
        if space.name != self.space or space.hash() != (self.space_hash or space.hash()):
            raise ValueError(f"the genotype comes from space {self.space!r} ({self.space_hash}), not from "
                             f"{space.name!r} ({space.hash()})")
        return Genotype(space=self.space, ops=self.ops, nodes=self.nodes, cells=self.cells, inputs=self.inputs,
                        space_hash=space.hash(), space_description=space.describe(), rule=self.rule)

    # ----------------------------------------------------------------- views
    @property
    def shared(self) -> bool:
        """One cell per cell type, repeated at every position (DARTS, NB201)."""
        return not any(name.startswith("cell") for name in self.cells)

    def cell_at(self, position: int, reduction: bool) -> Cell:
        """The cell a network puts at ``position``: its own, or the shared one of its type."""
        if not self.shared:
            return self.cells[f"cell{position}"]
        return self.cells["reduce" if reduction and "reduce" in self.cells else "normal"]

    def _shared_cell(self, name: str) -> Cell:
        if name not in self.cells:
            raise AttributeError(f"this genotype has no shared {name} cell (cells: {', '.join(self.cells)})")
        return self.cells[name]

    @property
    def normal(self) -> Pairs:
        return self._shared_cell("normal").pairs()

    @property
    def reduce(self) -> Pairs:
        return self._shared_cell("reduce").pairs()

    @property
    def normal_concat(self) -> tuple[int, ...]:
        return self._shared_cell("normal").concat

    @property
    def reduce_concat(self) -> tuple[int, ...]:
        return self._shared_cell("reduce").concat

    def _of_type(self, cell: str) -> list[Cell]:
        if cell not in ("normal", "reduce"):
            raise ValueError(f"cell must be 'normal' or 'reduce', got {cell!r}")
        return [c for c in self.cells.values() if c.reduction == (cell == "reduce")]

    def count(self, op: str, cell: str = "normal") -> int:
        """How many edges of the normal (or reduction) cells use ``op`` (skip connections: a sign of collapse)."""
        return sum(1 for c in self._of_type(cell) for name, _, _ in c.edges if name == op)

    def count_parameter_free(self, cell: str = "normal") -> int:
        """Edges of the normal (or reduction) cells whose op has no weights (pooling, skip, none, noise)."""
        return sum(1 for c in self._of_type(cell) for name, _, _ in c.edges if name in PARAMETER_FREE_OPS)

    @property
    def nb201(self) -> Optional[str]:
        """The NB201 arch string of a one-input, three-node cell (else None)."""
        if self.inputs != 1 or self.nodes != 3 or set(self.cells) != {"normal"}:
            return None
        edges = {(src, dst): op for op, src, dst in self.cells["normal"].edges}
        groups = ["|" + "|".join(f"{edges[(src, dst)]}~{src}" for src in range(dst)) + "|" for dst in (1, 2, 3)]
        return "+".join(groups)

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """The ``genotype.json`` payload (format /4, JSON types only)."""
        return {
            "format": FORMAT,
            "space": self.space,
            "space_hash": self.space_hash,
            "ops": list(self.ops),
            "nodes": self.nodes,
            "inputs": self.inputs,
            "cells": {name: cell.to_dict() for name, cell in self.cells.items()},
            "nb201": self.nb201,
            "space_description": self.space_description,
            "rule": self.rule,
        }

    def _content(self) -> dict[str, Any]:
        """What equality compares: the architecture and its space, not where the space was described or by which
        rule the cells were read (provenance)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("space_hash", "space_description", "rule")}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Genotype) and self._content() == other._content()

    def __hash__(self) -> int:
        return hash(json.dumps(self._content(), sort_keys=True))

    def __repr__(self) -> str:
        return f"Genotype({json.dumps(self.to_dict())})"

    @classmethod
    def from_dict(cls, d: Any, source: str = "genotype") -> "Genotype":
        """Build from a ``genotype.json`` payload (format /4, or /3, /2 and /1 of the earlier versions), checking
        every field and that the cells fit the space they name (:mod:`nasrun.genotype.fit`).

        The space must be one of :func:`known_spaces`, or be described in the file (format /3): a file
        may come from anywhere. ``source`` prefixes every error message (the file name when loading).
        """
        if isinstance(d, Mapping) and d.get("format") in (FORMAT, FORMAT_V3, FORMAT_V2):
            return cls._from_v2(d, source)
        if isinstance(d, Mapping) and d.get("format") not in (FORMAT_V1, None):
            raise GenotypeError(f"{source}: format: expected {FORMAT!r} (or the earlier {FORMAT_V3!r}, {FORMAT_V2!r}, "
                                f"{FORMAT_V1!r}), got {short(d.get('format'))}")
        check_keys_v1(d, source)
        space, ops, nodes = d.get("space", "darts"), d.get("ops", list(DARTS_OPS)), d.get("nodes", 4)
        validate_v1(space, ops, nodes, {c: (d[c], d[f"{c}_concat"]) for c in ("normal", "reduce")}, source,
                  known_space=True)
        genotype = cls(d["normal"], d["normal_concat"], d["reduce"], d["reduce_concat"], space=space, ops=ops,
                       nodes=nodes, source=source)
        check_fits(genotype, None, source)
        return genotype

    @classmethod
    def _from_v2(cls, d: Mapping, source: str) -> "Genotype":
        """Formats /2, /3 (which may carry the description of its space) and /4 (which may name its rule)."""
        check_keys_v2(d, source, {FORMAT: KEYS_V4, FORMAT_V3: KEYS_V3}.get(d["format"], KEYS_V2))
        description = d.get("space_description")
        check_space_name(d["space"], source, known_only=description is None)
        described = None if description is None else described_space(description, d["space"], d.get("space_hash"),
                                                                      source)
        check_ops(d["ops"], source)
        check_nodes(d["nodes"], source)
        check_inputs(d["inputs"], source)
        rule = d.get("rule", "space")
        check_rule(rule, d["inputs"], source)
        check_cells_v2(d["cells"], d["ops"], d["nodes"], d["inputs"], source, rule)
        cells = {name: Cell(tuple(tuple(e) for e in c["edges"]), tuple(c["concat"]),
                            c.get("reduction", name == "reduce")) for name, c in d["cells"].items()}
        genotype = cls(space=d["space"], ops=d["ops"], nodes=d["nodes"], cells=cells, inputs=d["inputs"],
                       space_hash=d.get("space_hash"), space_description=description, source=source, rule=rule)
        if d.get("nb201") is not None and d["nb201"] != genotype.nb201:
            raise GenotypeError(f"{source}: nb201: {short(d['nb201'])} does not match the cells "
                                f"({short(genotype.nb201)})")
        check_fits(genotype, described, source)
        return genotype

    def to_json(self) -> str:
        """Pretty JSON with one edge per line (readable and diff-friendly)."""
        d = self.to_dict()
        cells = []
        for name, cell in d["cells"].items():
            edges = ",\n".join(f"        {json.dumps(e)}" for e in cell["edges"])
            cells.append(f'    {json.dumps(name)}: {{\n      "edges": [\n{edges}\n      ],\n'
                         f'      "concat": {json.dumps(cell["concat"])},\n'
                         f'      "reduction": {json.dumps(cell["reduction"])}\n    }}')
        lines = [f"  {json.dumps(k)}: {json.dumps(v)}" if k != "cells" else '  "cells": {\n' + ",\n".join(cells)
                 + "\n  }" for k, v in d.items()]
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``genotype.json`` atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Genotype":
        """Read and validate a ``genotype.json``; every problem is a GenotypeError naming the file."""
        path = Path(path)
        return cls.from_dict(parse_json(read_text(path), path), source=str(path))

    # ------------------------------------------------------------ printing
    def __str__(self) -> str:
        if self.nb201:
            return f"Genotype[{self.space}] {self.nb201}"
        lines = [f"Genotype[{self.space}, {self.nodes} nodes, {len(self.cells)} cells]"]
        for name, cell in self.cells.items():
            nodes = []
            for target in range(self.inputs, self.inputs + self.nodes):
                parts = "+".join(f"{op}({src})" for op, src in cell.inputs_of(target))
                nodes.append(f"{target}={parts}")
            concat = ",".join(map(str, cell.concat))
            lines.append(f"  {name}: " + "  ".join(nodes) + f"  -> concat[{concat}]")
        return "\n".join(lines)


def parse_nb201(text: str, source: str = "genotype") -> Genotype:
    """An NB201 arch string (``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``) as a genotype of the nb201 space."""
    groups = text.strip().split("+")
    if len(groups) != 3:
        raise GenotypeError(f"{source}: {short(text)}: an NB201 arch string has 3 groups separated by '+' "
                            "(|op~0|+|op~0|op~1|+|op~0|op~1|op~2|)")
    edges = []
    for target, group in enumerate(groups, start=1):
        items = group.strip("|").split("|") if group.startswith("|") and group.endswith("|") else []
        if len(items) != target:
            raise GenotypeError(f"{source}: {short(group)}: node {target} needs {target} entries |op~source|")
        for src, item in enumerate(items):
            op, _, given = item.partition("~")
            if given != str(src) or op not in NB201_OPS:
                raise GenotypeError(f"{source}: {short(item)}: expected op~{src} with op one of "
                                    f"{', '.join(NB201_OPS)}")
            edges.append((op, src, target))
    cell = Cell(tuple(edges), (3,), False)
    return Genotype(space="nb201", ops=NB201_OPS, nodes=3, cells={"normal": cell}, inputs=1, source=source)


# ---------------------------------------------------- published genotypes
# Transcribed from the official repositories' genotypes.py (quark0/darts, chenxin061/pdarts, yuhuixu1993/PC-DARTS).
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


def _text(value: Any, limit: int = SHOWN) -> str:
    """A string as is (cut to ``limit``), anything else as its short repr: for values from result.json."""
    return value[:limit] if isinstance(value, str) else short(value, limit)


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
    head = f"genotype={short(spec)}"
    result = _read_result(folder)
    evidence = _retrain_evidence(folder, result)
    if evidence:
        retrained = result.get("genotype_source") if isinstance(result, Mapping) else None
        note = f"; it retrained genotype={_text(retrained)}" if isinstance(retrained, str) else ""
        return GenotypeError(
            f"{head}: {folder} is a retrain run folder ({evidence}){note}; a retraining produces a model, "
            f"not a genotype; expected a search run folder (one holding genotype.json), a genotype.json file "
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
    if spec.lstrip().startswith("|"):
        return parse_nb201(spec, f"genotype={short(spec)}"), None
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
    raise GenotypeError(f"genotype={short(spec)}: {what}; expected {_allowed()}")
