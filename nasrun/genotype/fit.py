"""Whether a genotype read from a file fits the space it names: the space's cell inputs, its cell kinds,
its derivation rule (how many inputs every node keeps) and, when the space is known exactly, its node
count, op vocabulary and the ops each edge may take.

The space is known exactly from the description a genotype carries (``space_description``, format /3,
checked against ``space_hash``), or from the space file shipped in ``nasrun/conf/space/`` when the
genotype's hash is that file's with the genotype's own ``ops`` and ``nodes`` (the fields a search may
change on the command line). Otherwise only what no such change alters is checked against the shipped
space of that name: cell inputs, cell kinds and the per-node input count.

A description is read here as plain data (the fields of the ``space`` config, ``nasrun.spaces.space``
reads the same ones): the space module builds genotypes, so the genotype room does not import it. The
hash is ``Space.hash``'s, and a test keeps the two equal for every shipped space.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
from typing import Any, Mapping, Optional

from nasrun.errors import GenotypeError
from nasrun.genotype.checks import MAX_NAME, MAX_NODES, short
from nasrun.spaces.names import OP_NAMES

#: The fields of a space description (the ``space`` config without its one line for people).
DESCRIPTION_KEYS = ("name", "ops", "cell_ops", "edge_ops", "nodes", "inputs", "derivation", "edges_per_node",
                    "cells", "skeleton")
CELL_TYPES = {"darts": ("normal", "reduce"), "nb201": ("normal",)}
_INPUTS = {"darts": 2, "nb201": 1}
_DERIVATIONS = ("top_k", "argmax", "searched")


def description_hash(description: Mapping[str, Any]) -> str:
    """The short hash of a space description (what ``Space.hash`` gives for the same fields)."""
    return hashlib.sha256(json.dumps(dict(description), sort_keys=True).encode()).hexdigest()[:12]


class Described:
    """A space description as the checks read it: its shape, its positions and each edge's op choices."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        self.fields = dict(d)
        self.name, self.ops, self.nodes, self.inputs = d["name"], tuple(d["ops"]), d["nodes"], d["inputs"]
        self.derivation, self.k, self.sharing = d["derivation"], d["edges_per_node"], d["cells"]
        self.skeleton, self.cell_types = d["skeleton"], CELL_TYPES[d["skeleton"]]
        self.edges = [(j, self.inputs + i) for i in range(self.nodes) for j in range(self.inputs + i)]
        self.min_layers = 1 if self.skeleton == "nb201" else 3

    def hash(self) -> str:
        return description_hash(self.fields)

    def reductions(self, layers: int) -> list[bool]:
        """Per position of a DARTS stack of ``layers`` cells, whether it reduces (at 1/3 and 2/3 of the depth)."""
        return [i in (layers // 3, 2 * layers // 3) for i in range(layers)]

    def choices(self, cell_type: str, edge: tuple[int, int]) -> list[str]:
        """The ops ``edge`` may take in a cell of this type: its own list, the cell type's, else the vocabulary."""
        edge_ops, cell_ops = self.fields.get("edge_ops"), self.fields.get("cell_ops")
        if edge_ops and cell_type in edge_ops:
            return list(edge_ops[cell_type][self.edges.index(edge)])
        if cell_ops and cell_type in cell_ops:
            return list(cell_ops[cell_type])
        return list(self.ops)


def _check_description(d: Mapping[str, Any], source: str) -> None:
    """What the checks rely on, field by field (the full rules of a space config apply when it is used)."""
    def bad(key: str, what: str) -> GenotypeError:
        return GenotypeError(f"{source}: space_description.{key}: {short(d[key])} is not allowed: {what}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    ops = d["ops"]
    if not isinstance(ops, list) or not ops or not all(isinstance(op, str) and op in OP_NAMES for op in ops) \
            or len(set(ops)) != len(ops):
        raise bad("ops", "a non-empty list of distinct op names nasrun knows")
    if not isinstance(d["skeleton"], str) or d["skeleton"] not in CELL_TYPES:
        raise bad("skeleton", f"one of {', '.join(CELL_TYPES)}")
    if d["inputs"] != _INPUTS[d["skeleton"]] or not is_int(d["inputs"]):
        raise bad("inputs", f"{_INPUTS[d['skeleton']]} for the {d['skeleton']} skeleton")
    if not is_int(d["nodes"]) or not 1 <= d["nodes"] <= MAX_NODES:
        raise bad("nodes", f"an integer in 1..{MAX_NODES}")
    if d["derivation"] not in _DERIVATIONS:
        raise bad("derivation", f"one of {', '.join(_DERIVATIONS)}")
    if not is_int(d["edges_per_node"]) or (d["derivation"] == "top_k" and not 1 <= d["edges_per_node"] <= d["inputs"]):
        raise bad("edges_per_node", f"an integer, 1..{d['inputs']} for top_k")
    if d["cells"] not in ("shared", "independent") or (d["skeleton"] == "nb201" and d["cells"] != "shared"):
        raise bad("cells", "shared or independent (shared for the nb201 skeleton)")
    edges = sum(d["inputs"] + i for i in range(d["nodes"]))
    for key in ("cell_ops", "edge_ops"):
        lists, what = d[key], "null, or per cell type a list of ops of space_description.ops"
        if lists is None:
            continue
        if not isinstance(lists, dict) or not all(kind in CELL_TYPES[d["skeleton"]] for kind in lists):
            raise bad(key, f"{what}, for the cell types {', '.join(CELL_TYPES[d['skeleton']])}")
        for value in lists.values():
            rows = [value] if key == "cell_ops" else value if isinstance(value, list) and len(value) == edges else [0]
            if not all(isinstance(row, list) and row and all(op in ops for op in row) for row in rows):
                raise bad(key, what + (f", one list per edge ({edges})" if key == "edge_ops" else ""))


@functools.lru_cache(maxsize=None)
def _shipped_fields(name: str) -> Optional[dict]:
    """The description fields of ``nasrun/conf/space/<name>.yaml`` (None if none ships under that name)."""
    import yaml

    try:
        text = (importlib.resources.files("nasrun.conf") / "space" / f"{name}.yaml").read_text(encoding="utf-8")
        loaded = yaml.safe_load(text)
    except (OSError, ModuleNotFoundError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(loaded, dict):
        return None
    fields = {"cell_ops": None, "edge_ops": None, **loaded}  # the two a space file may leave out
    return {k: fields[k] for k in DESCRIPTION_KEYS} if all(k in fields for k in DESCRIPTION_KEYS) else None


def described_space(description: Any, space: str, space_hash: Any, source: str) -> Described:
    """The space a format-/3 file describes, refused unless it is a valid space named ``space`` with ``space_hash``."""
    where = "space_description"
    if not isinstance(description, Mapping):
        raise GenotypeError(f"{source}: {where}: expected null or an object with keys {', '.join(DESCRIPTION_KEYS)}, "
                            f"got {short(description)}")
    unknown = [k for k in description if k not in DESCRIPTION_KEYS]
    missing = [k for k in DESCRIPTION_KEYS if k not in description]
    if unknown or missing:
        what = f"unknown key(s) {', '.join(short(k, 60) for k in unknown[:5])}" if unknown else \
            f"missing key(s) {', '.join(missing)}"
        raise GenotypeError(f"{source}: {where}: {what}; a space description has the keys {', '.join(DESCRIPTION_KEYS)}")
    if description["name"] != space:
        raise GenotypeError(f"{source}: {where}.name: {short(description['name'], MAX_NAME + 10)} is not the "
                            f"genotype's space {short(space, MAX_NAME + 10)}")
    if space_hash != description_hash(description):
        raise GenotypeError(f"{source}: space_hash: {short(space_hash)} is not the hash of space_description "
                            f"({description_hash(description)}); the description was changed after the search wrote it")
    _check_description(description, source)
    return Described(description)


def check_fits(genotype: Any, described: Optional[Described], source: str) -> None:
    """Refuse a genotype whose cells its space cannot have produced (one GenotypeError naming the field)."""
    if described is not None:
        _check_shape(genotype, described, source)
        _check_exact(genotype, described, source)
        return
    fields = _shipped_fields(genotype.space)
    if fields is None:  # a space name the caller accepted without a description: nothing to compare with
        return
    own = Described({**fields, "ops": list(genotype.ops), "nodes": genotype.nodes})
    _check_shape(genotype, own, source)
    if genotype.space_hash == own.hash():  # the shipped file with the genotype's ops and nodes: known exactly
        _check_exact(genotype, own, source)


def _check_shape(g: Any, space: Described, source: str) -> None:
    """What no command-line change of ``ops`` or ``nodes`` alters: cell inputs, cell kinds, inputs kept per node."""
    named = f"the {space.name} space"
    if g.inputs != space.inputs:
        kinds = ", ".join(g.cells) if len(g.cells) <= 3 else f"{len(g.cells)} cells"
        raise GenotypeError(
            f"{source}: space: {short(g.space, MAX_NAME + 10)} does not fit these cells: {named}'s cells have "
            f"{space.inputs} input{'s' if space.inputs > 1 else ''} ({'DARTS' if space.inputs == 2 else 'NB201'} "
            f"skeleton), these have {g.inputs} ({kinds}); name the space the cells were searched in"
        )
    if (space.sharing == "shared") != g.shared:
        has = "one cell per position (cell0, cell1, ...)" if not g.shared else f"shared cells ({', '.join(g.cells)})"
        wants = "an independent cell per position" if space.sharing == "independent" else \
            f"shared cells ({', '.join(space.cell_types)})"
        raise GenotypeError(f"{source}: space: {short(g.space, MAX_NAME + 10)} does not fit these cells: {named} has "
                            f"{wants}, these are {has}; name the space the cells were searched in")
    if not g.shared:
        _check_positions(g, space, source)
    for name, cell in g.cells.items():
        _check_node_inputs(name, cell, g, space, source)


def _check_positions(g: Any, space: Described, source: str) -> None:
    """One cell per position of a network of that many cells, reducing where the DARTS stack reduces."""
    layers = len(g.cells)
    if layers < space.min_layers:
        raise GenotypeError(f"{source}: cells: {layers} positions, but {space.name} networks have at least "
                            f"{space.min_layers} cells (two reduction cells and a normal cell)")
    for i, reduction in enumerate(space.reductions(layers)):
        if g.cells[f"cell{i}"].reduction != reduction:
            raise GenotypeError(f"{source}: cells.cell{i}.reduction: expected {str(reduction).lower()}: a network of "
                                f"{layers} cells reduces at positions {layers // 3} and {2 * layers // 3}")


def _check_node_inputs(name: str, cell: Any, g: Any, space: Described, source: str) -> None:
    """The rule's input count: exactly k per node (top-k), every edge (argmax), at least one (searched); under
    the pairs rule k (op, input) pairs per node, under the threshold rule at most k inputs per node."""
    rule = getattr(g, "rule", "space")
    if rule != "space" and space.derivation != "top_k":
        raise GenotypeError(f"{source}: rule: {rule} reads cells whose nodes keep k inputs (top_k derivation); the "
                            f"{space.name} space derives by {space.derivation}")
    for target in range(g.inputs, g.inputs + g.nodes):
        count = len(cell.inputs_of(target))
        if rule == "threshold":
            if count > space.k:
                raise GenotypeError(f"{source}: cells.{name}.edges: node {target} has {count} inputs; the threshold "
                                    f"rule keeps at most {space.k} per node in the {space.name} space")
            continue
        if space.derivation == "top_k":
            what = "(op, input) pair" if rule == "pairs" else "input"
            wanted, rule_text = space.k, f"exactly {space.k} (top-{space.k} {'pairs' if rule == 'pairs' else 'derivation'})"
        elif space.derivation == "argmax":
            what, wanted, rule_text = "input", target, f"an edge from every earlier state, {target} (argmax derivation)"
        else:
            continue  # searched: any non-empty set of edges, checked with the cell
        if count != wanted:
            raise GenotypeError(f"{source}: cells.{name}.edges: node {target} has {count} {what}"
                                f"{'s' if count != 1 else ''}; every node of the {space.name} space keeps {rule_text}")


def _check_exact(g: Any, space: Described, source: str) -> None:
    """With the space known exactly: its node count, its vocabulary and the ops each edge may take."""
    if g.nodes != space.nodes:
        raise GenotypeError(f"{source}: nodes: {g.nodes}, but the {space.name} space the genotype was searched in "
                            f"has {space.nodes} nodes per cell")
    if tuple(g.ops) != space.ops:
        raise GenotypeError(f"{source}: ops: {short(list(g.ops))} is not the vocabulary of the {space.name} space "
                            f"the genotype was searched in ({short(list(space.ops))})")
    for name, cell in g.cells.items():
        cell_type = name if g.shared else ("reduce" if cell.reduction and "reduce" in space.cell_types else "normal")
        for k, (op, src, dst) in enumerate(cell.edges):
            choices = space.choices(cell_type, (src, dst))
            if op not in choices:
                raise GenotypeError(f"{source}: cells.{name}.edges[{k}]: op {short(op)} is not a choice of edge "
                                    f"{src}->{dst} in the {space.name} space ({', '.join(choices)})")
