"""Genotypes carry what they need: the cell count of a per-position genotype is the default recipe.layers, and
a genotype searched in a space defined in the user's own config folder retrains anywhere, its space checked by
the description it carries and that description's hash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_SYNTH
from nasrun.cli.show import show
from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError, GenotypeError
from nasrun.genotype.fit import _shipped_fields, description_hash
from nasrun.genotype.genotype import Genotype, resolve_genotype
from nasrun.spaces.space import Space
from nasrun.train.inputs import cells_for, layers_named
from nasrun.train.retrain import prepare_retrain

SEARCH = [o.replace("search.epochs=2", "search.epochs=1") for o in TINY_SYNTH if not o.startswith("space.ops=")]
RETRAIN = ["recipe=quick", "recipe.epochs=1", "recipe.C=4", "progress=false"]


def _nasrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "nasrun", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


def _large_genotype(layers: int, nodes: int = 3) -> Genotype:
    space = Space(to_typed(compose("search", ["space=large", f"space.nodes={nodes}"])).space)
    torch.manual_seed(layers)
    weights = {kind: torch.randn(space.num_edges, len(space.ops)) for kind in space.kinds(layers)}
    return space.derive(weights, None, layers).with_space(space)


def test_the_description_hash_is_the_space_s_hash_for_every_shipped_space():
    """The genotype room reads a description as data: its hash must be what the space itself computes."""
    from nasrun.genotype.checks import known_spaces

    for name in known_spaces():
        space = Space(to_typed(compose("search", [f"space={name}"])).space)
        assert description_hash(space.describe()) == space.hash() == description_hash(_shipped_fields(name)), name
    changed = Space(to_typed(compose("search", ["space=darts", "space.nodes=2", "space.ops=[none,skip_connect]"])).space)
    assert description_hash({**_shipped_fields("darts"), "nodes": 2, "ops": ["none", "skip_connect"]}) == changed.hash()


# ------------------------------------------------------------------ the cell count as recipe.layers
def test_layers_named_reads_only_recipe_layers():
    assert layers_named(["recipe.layers=5"]) and layers_named(["++recipe.layers=5"]) and layers_named(["+recipe.layers=5"])
    assert not layers_named(["recipe=quick", "supernet.layers=5", "recipe.layers_x=1", "~recipe.layers"])


def test_a_per_position_genotype_sets_the_default_layers_and_refuses_another(tmp_path, capsys):
    path = tmp_path / "genotype.json"
    _large_genotype(layers=5).save(path)
    cfg = to_typed(compose("retrain", [f"genotype={path}", "dataset=synthetic"]))
    assert cfg.recipe.layers == 20  # the cifar recipe's own number
    ready, genotype, _, _ = prepare_retrain(cfg, layers_given=False)
    assert ready.recipe.layers == 5 == len(genotype.cells) and not genotype.shared
    assert cells_for(genotype, ready, layers_given=True) is ready  # 5 given for 5 cells: nothing to change
    with pytest.raises(ConfigError, match=r"^recipe\.layers=20 is not allowed: the genotype has its own cell for "
                                          r"each of 5 positions; leave recipe\.layers out or set recipe\.layers=5$"):
        prepare_retrain(cfg, layers_given=True)

    show([f"genotype={path}", "dataset=synthetic", "recipe.C=4"])
    out = capsys.readouterr().out
    assert "recipe.layers=5 (cells in the DARTS stack" in out and "independent cells, 5 cells" in out
    with pytest.raises(ConfigError, match=r"^recipe\.layers=7 is not allowed: .* set recipe\.layers=5$"):
        show([f"genotype={path}", "dataset=synthetic", "recipe.layers=7"])
    show([f"genotype={path}", "dataset=synthetic", "recipe.C=4", "recipe.layers=5"])  # the same number: fine
    assert "recipe.layers=5" in capsys.readouterr().out


@pytest.fixture(scope="module")
def large_search(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("large")
    proc = _nasrun("search", "space=large", *SEARCH, "supernet.layers=4", f"hydra.run.dir={root / 'search'}",
                   cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "search"


def test_show_and_retrain_of_a_large_search_folder_need_no_layers_key(large_search: Path, tmp_path: Path):
    shown = _nasrun("show", f"genotype={large_search}", "recipe.C=4", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "recipe.layers=4 (cells in the DARTS stack" in shown.stdout
    run = tmp_path / "retrain"
    proc = _nasrun("retrain", f"genotype={large_search}", *RETRAIN, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and result["config"]["recipe"]["layers"] == 4
    assert result["config"]["space"]["name"] == "large"
    refused = _nasrun("retrain", f"genotype={large_search}", *RETRAIN, "recipe.layers=6",
                      f"hydra.run.dir={tmp_path / 'other'}", cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "recipe.layers=6 is not allowed" in lines[0] and "set recipe.layers=4" in lines[0]


# ------------------------------------------------------------------ a space from the user's config folder
MY_SPACE = """\
name: myspace
ops: [none, skip_connect, sep_conv_3x3, max_pool_3x3]
nodes: 2
inputs: 2
derivation: top_k
edges_per_node: 2
cells: shared
skeleton: darts
description: "a space of my own"
"""


@pytest.fixture(scope="module")
def user_search(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user")
    (root / "conf" / "space").mkdir(parents=True)
    (root / "conf" / "space" / "myspace.yaml").write_text(MY_SPACE)
    overrides = [o for o in SEARCH if not o.startswith("space.nodes=")]
    proc = _nasrun("search", "space=myspace", *overrides, f"hydra.run.dir={root / 'search'}",
                   f"hydra.searchpath=[file://{root / 'conf'}]", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "search"


def test_the_genotype_carries_its_space_and_retrains_without_the_user_folder(user_search: Path, tmp_path: Path):
    saved = json.loads((user_search / "genotype.json").read_text())
    assert saved["format"] == "nasrun.genotype/4" and saved["space"] == "myspace"
    assert saved["space_description"]["ops"] == ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"]
    assert "description" not in saved["space_description"]  # what the hash covers, no more
    genotype, folder = resolve_genotype(str(user_search))
    assert folder == user_search and genotype.space_description == saved["space_description"]
    loose = tmp_path / "mine.json"  # copied away from its run folder and from the config folder
    shutil.copy(user_search / "genotype.json", loose)
    assert resolve_genotype(str(loose)) == (genotype, None)
    run = tmp_path / "retrain"
    proc = _nasrun("retrain", f"genotype={loose}", "dataset=synthetic", *RETRAIN, "recipe.layers=3",
                   f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and result["config"]["space"]["name"] == "myspace"


@pytest.mark.parametrize("change,message", [
    (lambda d: d["space_description"].update(nodes=3), "space_hash: '{hash}' is not the hash of space_description"),
    (lambda d: d.update(space_hash="0" * 12), "space_hash: '000000000000' is not the hash of space_description"),
    (lambda d: d["space_description"].update(name="yours"), "space_description.name: 'yours' is not the "
                                                            "genotype's space 'myspace'"),
    (lambda d: d["space_description"].pop("skeleton"), "space_description: missing key(s) skeleton"),
    (lambda d: d.update(space_description={**d["space_description"], "edges_per_node": 9},
                        space_hash=description_hash({**d["space_description"], "edges_per_node": 9})),
     "space_description.edges_per_node: 9 is not allowed: an integer, 1..2 for top_k"),
    (lambda d: d.update(space_description={**d["space_description"], "skeleton": ["darts"]},
                        space_hash=description_hash({**d["space_description"], "skeleton": ["darts"]})),
     "space_description.skeleton: ['darts'] is not allowed"),
    (lambda d: d.update(space_description=None), "space: unknown space 'myspace'"),
    (lambda d: d.update(format="nasrun.genotype/2"), "unknown key(s) 'space_description'"),
])
def test_a_changed_description_is_refused(user_search: Path, tmp_path: Path, change, message):
    d = json.loads((user_search / "genotype.json").read_text())
    change(d)
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(d))
    with pytest.raises(GenotypeError) as info:
        Genotype.load(path)
    assert str(info.value).startswith(f"{path}: " + message.format(hash=d["space_hash"])), str(info.value)


def test_preflight_refuses_another_layer_count_before_hydra_starts(tmp_path):
    """A conflicting ``recipe.layers`` is refused with the whole command line, before a run folder exists."""
    from nasrun.cli.preflight import check_command_line

    path = tmp_path / "genotype.json"
    _large_genotype(layers=5).save(path)
    with pytest.raises(ConfigError, match=r"^recipe\.layers=7 is not allowed: .* set recipe\.layers=5$"):
        check_command_line("retrain", [f"genotype={path}", "dataset=synthetic", "recipe.layers=7"])
    check_command_line("retrain", [f"genotype={path}", "dataset=synthetic", "recipe.layers=5"])
    check_command_line("retrain", [f"genotype={path}", "dataset=synthetic"])  # the genotype's own count
