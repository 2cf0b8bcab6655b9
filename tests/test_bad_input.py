"""Bad command lines: each ends in one ConfigError line that names the key (composed in-process, so it stays fast),
and a few through the real console script for the exit status and the absence of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError

# (command, overrides, text the message must contain: the key, or the path, named)
BAD = [
    ("search", ["seed=99999999999999999999"], "seed"),
    ("search", ["seed=-1"], "seed"),
    ("search", ["seed=abc"], "seed"),
    ("search", ["seed=null"], "seed"),
    ("search", ["seed=1.5"], "seed"),
    ("search", ["supernet.C=99999999999999999999"], "supernet.C"),
    ("search", ["supernet.C=0"], "supernet.C"),
    ("search", ["supernet.C=1000000"], "supernet.C"),
    ("search", ["supernet.layers=2"], "supernet.layers"),
    ("search", ["supernet.layers=100000"], "supernet.layers"),
    ("search", ["space.nodes=0"], "space.nodes"),
    ("search", ["space.nodes=2000"], "space.nodes"),
    ("search", ["supernet.nodes=2"], "space.nodes"),  # the old key names the new one
    ("search", ["supernet.partial_channels=3"], "supernet.partial_channels"),
    ("search", ["supernet.edge_norm=maybe"], "supernet.edge_norm"),
    ("search", ["supernet.skip_dropout=[nan]"], "supernet.skip_dropout"),
    ("search", ["supernet.skip_dropout=[1.5]"], "supernet.skip_dropout"),
    ("search", ["supernet.foo=1"], "supernet.foo"),
    ("search", ["+supernet.foo=1"], "supernet.foo"),
    ("search", ["+foo=1"], "foo"),
    ("search", ["++foo=1"], "foo"),
    ("search", ["+search.epoch=3"], "search.epochs"),
    ("search", ["search.epoch=3"], "search.epochs"),
    ("search", ["serach.epochs=2"], "search.epochs"),
    ("search", ["search.epochs=abc"], "search.epochs"),
    ("search", ["search.epochs=2.5"], "search.epochs"),
    ("search", ["search.epochs="], "search.epochs"),
    ("search", ["search.epochs=null"], "search.epochs"),
    ("search", ["search.epochs=0"], "search.epochs"),
    ("search", ["search.epochs=[1,2]"], "search.epochs"),
    ("search", ["search.lr=0"], "search.lr"),
    ("search", ["search.lr=inf"], "search.lr"),
    ("search", ["search.lr=nan"], "search.lr"),
    ("search", ["search.lr_min=1"], "search.lr_min"),
    ("search", ["search.momentum=1"], "search.momentum"),
    ("search", ["search.weight_decay=-1"], "search.weight_decay"),
    ("search", ["search.grad_clip=0"], "search.grad_clip"),
    ("search", ["search.arch_lr=-1"], "search.arch_lr"),
    ("search", ["search.arch_betas=[0.5]"], "search.arch_betas"),
    ("search", ["search.arch_warmup_epochs=-1"], "search.arch_warmup_epochs"),
    ("search", ["search.batch_size=0"], "search.batch_size"),
    ("search", ["dataset.mean=[nan,0.5,0.5]"], "dataset.mean"),
    ("search", ["dataset.std=[0,1,1]"], "dataset.std"),
    ("search", ["dataset.mean=[0.5]"], "dataset.mean"),
    ("search", ["dataset=cifar11"], "dataset"),
    ("search", ["dataset.subset=0"], "dataset.subset"),
    ("search", ["dataset.subset_classes=11"], "dataset.subset_classes"),
    ("search", ["dataset.search_split=1"], "dataset.search_split"),
    ("search", ["dataset.loader=gpu"], "dataset.loader"),
    ("search", ["dataset.workers=-1"], "dataset.workers"),
    ("search", ["dataset.train_augment=[rotate]"], "dataset.train_augment"),
    ("search", ["space.ops=[none,conv_9x9]"], "space.ops"),
    ("search", ["space.ops=[none]"], "space.ops"),
    ("search", ["space.ops=[skip_connect,skip_connect]"], "space.ops"),
    ("search", ["device=tpu"], "device"),
    ("search", ["method=amend"], "method"),
    ("search", ["estimator=amend"], "estimator"),
    ("search", ["method=darts", "estimator.eta=5"], "estimator.eta"),
    ("search", ["method=darts", "perturbation.pgd_steps=3"], "perturbation.pgd_steps"),
    ("search", ["method=darts", "schedule.stage_keep=[3]"], "schedule.stage_keep"),
    ("search", ["method=darts", "alpha_map.param_reg=1"], "alpha_map.param_reg"),
    ("search", ["method.eta=0.5"], "estimator.eta"),
    ("search", ["method.product_point=x"], "method.product_point"),
    ("search", ["method=amended", "estimator.eta=-1"], "estimator.eta"),
    ("search", ["method=amended", "estimator.hvp=approx"], "estimator.hvp"),
    ("search", ["method=amended", "estimator.fd_radius=0"], "estimator.fd_radius"),
    ("search", ["method=sdarts_rs", "perturbation.epsilon=2"], "perturbation.epsilon"),
    ("search", ["method=sdarts_rs", "perturbation.epsilon_start=0.5"], "perturbation.epsilon_start"),
    ("search", ["method=sdarts_adv", "perturbation.simplex=euclid"], "perturbation.simplex"),
    ("search", ["method=pdarts", "schedule.stage_keep=[3,5,1]"], "schedule.stage_keep"),
    ("search", ["method=pdarts", "schedule.stage_keep=[5,3]"], "schedule.stage_keep"),
    ("search", ["method=pdarts", "schedule.stage_keep=[9,3,1]"], "schedule.stage_keep"),
    ("search", ["method=zarts", "estimator.samples=0"], "estimator.samples"),
    ("search", ["method=zarts", "estimator.inner_data=test"], "estimator.inner_data"),
    ("search", ["method=nasp", "alpha_map.init=inf"], "alpha_map.init"),
    ("search", ["method.name=a/b"], "method.name"),
    ("search", ["recipe.C=0"], "recipe.C"),
    ("search", ["recipe.drop_path_prob=1"], "recipe.drop_path_prob"),
    ("retrain", [], "genotype"),
    ("retrain", ["genotype=DARTS_V2", "recipe.layers=2"], "recipe.layers"),
    ("retrain", ["genotype=DARTS_V2", "recipe.cutout=-1"], "recipe.cutout"),
    ("retrain", ["genotype=DARTS_V2", "recipe.epochs=0"], "recipe.epochs"),
    # interpolations that cannot be resolved are bad values of their key
    ("search", ["seed=${oc.env:NASRUN_UNSET_VARIABLE}"], "seed='${oc.env:NASRUN_UNSET_VARIABLE}'"),
    ("search", ["seed=${seed}"], "seed='${seed}'"),
    ("search", ["seed=${oc.env:HOME}"], "seed='${oc.env:HOME}'"),
    ("search", ["method.name=${no.such.key}"], "method.name"),
    # what Hydra accepts and nasrun would silently ignore or misread
    ("search", ["channels_last=2"], "channels_last=2 is not allowed: must be true or false"),
    ("search", ["channels_last=yes"], "channels_last"),
    ("search", ["progress=0"], "progress"),
    ("search", ["~seed"], "~seed"),
    ("search", ["~method"], "~method"),
    ("search", ["+hydra.foo=1"], "hydra.foo"),
    ("search", ["+search.epochs=1"], "++search.epochs"),
    ("search", ["++search.epoch=1"], "did you mean search.epochs?"),
    # what cannot be read as an override names the argument
    ("search", [""], "empty argument"),
    ("search", ["search.epochs=[1"], "search.epochs=[1"),
    ("search", ["seed=" + "9" * 10000], "10000 digits"),
]


def _error(command: str, overrides: list[str]) -> str:
    """What the CLI checks before any work: composition, values, and (retrain) the genotype."""
    from nasrun.train.retrain import prepare_retrain

    with pytest.raises(ConfigError) as err:
        typed = to_typed(compose(command, overrides))
        if command == "retrain":
            prepare_retrain(typed)
    return str(err.value)


def test_at_least_sixty_bad_command_lines_are_covered():
    assert len(BAD) >= 60


@pytest.mark.parametrize("command,overrides,named", BAD, ids=[" ".join(o) or c for c, o, _ in BAD])
def test_a_bad_command_line_is_one_line_naming_the_key(command, overrides, named):
    message = _error(command, overrides)
    assert named in message, message
    assert "\n" not in message and len(message) < 600, message
    assert "Traceback" not in message and "Config search path" not in message


@pytest.mark.parametrize("override,options", [("hydra/launcher=slurmx", "basic, joblib, population, slurm"),
                                              ("hydra/sweeper=grid", "one of basic")])
def test_an_unknown_hydra_group_option_lists_hydra_s_options(override, options):
    message = _error("search", [override])
    group, value = override.split("=")
    assert message.startswith(f"{group}='{value}' is not an option: one of ") and options in message, message
    assert "\n" not in message


def test_a_huge_value_is_not_echoed_whole():
    message = _error("search", ["method.name=" + "x" * 5000])
    assert "method.name" in message and len(message) < 400


@pytest.mark.smoke
def test_a_typo_suggests_the_key_not_the_plus():
    message = _error("search", ["search.epoch=3"])
    assert "did you mean search.epochs?" in message and "+search" not in message


def _nasrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "nasrun", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("args,named", [
    (["search", "method=darts", "estimator.eta=5"], "estimator.eta"),
    (["search", "+search.epoch=3"], "search.epochs"),
    (["search", "hydra.run.dir=/dev/null/x"], "/dev/null"),
    (["search", "hydra.run.dir="], "hydra.run.dir"),
    (["search", "-m", "seed=0,1", "hydra.sweep.dir=/dev/null/x"], "/dev/null"),
    (["search", "-m", "seed=0,1", "estimator.eta=0.1,0.5"], "estimator.eta"),
    (["retrain", "genotype=nas201"], "genotype"),
    (["show", "genotype=DARTS_V2", "--plot=/nonexistent/dir/x.png"], "/nonexistent/dir"),
    (["search", "seed=${oc.env:NASRUN_UNSET_VARIABLE}"], "seed"),
    (["search", ""], "empty argument"),
    (["search", "recipe.epochs=3"], "recipe"),
    (["search", "-m", "seed=glob(*)"], "seed=glob(*)"),
])
def test_the_console_script_exits_2_with_one_line(tmp_path, args, named):
    proc = _nasrun(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and named in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path("/nonexistent").exists()


_LONG_DIR = "/".join(["d" * 200] * 30)  # 30 names of 200 characters: past the system's path limit
# (command line, words the one line must hold): each was a traceback, a silent accept or a raw Hydra error
COMMAND_LINES = [
    (["search", "seed=${oc.env:NASRUN_UNSET_VARIABLE}"], ["seed=", "NASRUN_UNSET_VARIABLE"]),
    (["search", "seed=${seed}"], ["seed=", "Recursive"]),
    (["search", "hydra.run.dir=${oc.env:NASRUN_UNSET_VARIABLE}"], ["hydra.run.dir=", "NASRUN_UNSET_VARIABLE"]),
    (["search", f"hydra.run.dir={_LONG_DIR}"], ["hydra.run.dir=", "at most 3840"]),
    (["search", "-m", "seed=0,1", f"hydra.sweep.dir=/tmp/{'n' * 300}"], ["hydra.sweep.dir=", "at most 255"]),
    (["search", "channels_last=2"], ["channels_last=2", "true or false"]),
    (["search", "~seed"], ["~seed", "seed=VALUE"]),
    (["search", "+hydra.foo=1"], ["+hydra.foo", "--cfg hydra"]),
    (["search", "-m", "seed=glob(*)"], ["seed=glob(*)", "seed=0,1,2"]),
    (["search", "-m", "method=glob(nope*)"], ["method=glob(nope*)", "amended"]),
    (["search", "-m", "seed=range(3,3)"], ["seed=range(3,3)", "no job would run"]),
    (["search", "-m", "seed=interval(0,1)"], ["seed=interval(0,1)", "sweeper"]),
    (["search", "recipe.epochs=3"], ["recipe.epochs=3", "nasrun search does not read recipe",
                                     "nasrun retrain and nasrun pipeline read it"]),
    (["search", "genotype=DARTS_V2"], ["genotype=DARTS_V2", "nasrun retrain reads it"]),
    (["search", "-m", "recipe.epochs=1,2"], ["recipe.epochs=1,2", "does not read recipe"]),
    (["retrain", "genotype=DARTS_V2", "search.epochs=1"], ["search.epochs=1", "nasrun retrain does not read search",
                                                           "nasrun search and nasrun pipeline read it"]),
    (["retrain", "genotype=DARTS_V2", "method=amended"], ["method=amended", "does not read method"]),
    (["pipeline", "genotype=DARTS_V2"], ["genotype=DARTS_V2", "its own search finds"]),
    (["search", ""], ["empty argument"]),
    (["search", "search.epochs=[1"], ["search.epochs=[1", "cannot be read"]),
    (["search", "seed=" + "9" * 10000], ["seed=", "10000 digits"]),
    (["search", "frobnicate"], ["'frobnicate' is not an override"]),
    (["search", "--cfg", "yaml"], ["--cfg", "invalid choice"]),
    (["retrain", "genotype=DARTS_V2", "dataset.root=/data"], ["dataset.root", "e.g. dataset=cifar10 dataset.root="]),
    (["search", "-m", "seed=0,1", "--cfg", "job"], ["--multirun and --cfg"]),
]


@pytest.mark.parametrize("args,words", COMMAND_LINES, ids=[" ".join(a)[:60] for a, _ in COMMAND_LINES])
def test_a_bad_command_line_exits_2_with_one_line_naming_it(args, words, tmp_path, monkeypatch, capsys):
    """In-process through the entry point: exit 2, one ``nasrun <command>: error:`` line, nothing written."""
    from nasrun.cli.dispatch import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nasrun"])  # the dispatcher sets sys.argv for Hydra
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nasrun {args[0]}: error: "), err
    assert "Traceback" not in err and len(lines[0]) < 700
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not list(tmp_path.iterdir())  # refused before any folder was made


# ------------------------------------------------- genotype files and benchmark tables: refused before any work
def _genotype(name: str = "DARTS_V2", **top) -> dict:
    """A published genotype as a format-/2 payload, top-level fields replaced."""
    from nasrun.genotype.genotype import PUBLISHED, parse_nb201

    g = parse_nb201(NB201_BEST) if name == "nb201" else PUBLISHED[name]
    d = {**g.to_dict(), "format": "nasrun.genotype/2", **top}
    if d["format"] != "nasrun.genotype/4":
        del d["rule"]  # a key of format /4
    if d["format"] == "nasrun.genotype/2":
        del d["space_description"]  # a key of format /3
    return d


NB201_BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def _without_cell(kind: str, fmt: str = "nasrun.genotype/2") -> dict:
    d = _genotype(format=fmt)
    del d["cells"][kind]
    return d


def _edges(change) -> dict:
    d = _genotype()
    change(d["cells"]["normal"]["edges"])
    return d


def _v1(**top) -> dict:
    from nasrun.genotype.genotype import PUBLISHED

    g = PUBLISHED["DARTS_V2"]
    return {"format": "nasrun.genotype/1", "space": "darts", "ops": list(g.ops), "nodes": 4,
            "normal": [list(p) for p in g.normal], "normal_concat": [2, 3, 4, 5],
            "reduce": [list(p) for p in g.reduce], "reduce_concat": [2, 3, 4, 5], "cells": None, **top}


def _v1_without_reduce() -> dict:
    d = _v1()
    del d["reduce"]
    return d


def _v3_of_nb201_named_darts() -> dict:
    from nasrun.spaces.space import Space
    from nasrun.config.compose import compose, to_typed

    darts = Space(to_typed(compose("search", [])).space)
    return _genotype("nb201", format="nasrun.genotype/3", space="darts", space_hash=darts.hash(),
                     space_description=darts.describe(), nb201=None)


# (what, payload, the field the line names)
GENOTYPE_FILES = [
    ("v2 without cells.normal", lambda: _without_cell("normal"), "cells.normal: missing"),
    ("v2 without cells.reduce", lambda: _without_cell("reduce"), "cells.reduce: missing"),
    ("v3 without cells.reduce", lambda: _without_cell("reduce", "nasrun.genotype/3"), "cells.reduce: missing"),
    ("v1 without reduce", _v1_without_reduce, "missing key(s) 'reduce'"),
    ("a duplicated edge", lambda: _edges(lambda e: e.append(list(e[0]))), "a second edge from state 0 to node 2"),
    ("two ops on one edge", lambda: _edges(lambda e: e.__setitem__(1, ["skip_connect", 0, 2])),
     "cells.normal.edges[1]: a second edge from state 0 to node 2"),
    ("v1 two ops on one input", lambda: _v1(normal=[["sep_conv_3x3", 0]] * 2 + _v1()["normal"][2:]),
     "normal[1]: input 0 is also node 0's other input"),
    ("a node with one input", lambda: _edges(lambda e: e.pop()),
     "cells.normal.edges: node 5 has 1 input; every node of the darts space keeps exactly 2 (top-2 derivation)"),
    ("a node with three inputs", lambda: _edges(lambda e: e.append(["sep_conv_3x3", 3, 5])),
     "cells.normal.edges: node 5 has 3 inputs"),
    ("v2 DARTS cells named nb201", lambda: _genotype(space="nb201"), "space: 'nb201' does not fit these cells"),
    ("v1 DARTS cells named nb201", lambda: _v1(space="nb201"), "space: 'nb201' does not fit these cells"),
    ("v2 shared cells named large", lambda: _genotype(space="large"), "space: 'large' does not fit these cells"),
    ("v2 NB201 cell named darts", lambda: _genotype("nb201", space="darts", nb201=None),
     "space: 'darts' does not fit these cells: the darts space's cells have 2 inputs"),
    ("v3 NB201 cell named darts", _v3_of_nb201_named_darts, "space: 'darts' does not fit these cells"),
]


@pytest.mark.parametrize("what,payload,named", GENOTYPE_FILES, ids=[c[0] for c in GENOTYPE_FILES])
def test_a_genotype_file_that_breaks_a_rule_is_one_line_naming_the_field(tmp_path, capsys, what, payload, named):
    """Through the console's own entry point (in-process: these are refused before Hydra starts), for show and
    for retrain, before any folder is made or any network trained."""
    import json

    from nasrun.cli.dispatch import main

    path = tmp_path / "g.json"
    path.write_text(json.dumps(payload()))
    for args in (["show", f"genotype={path}"], ["retrain", f"genotype={path}", f"hydra.run.dir={tmp_path / 'rt'}"]):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert exit_.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(f"nasrun {args[0]}: error: {path}: ") and named in lines[0], lines[0]
    assert not (tmp_path / "rt").exists()


@pytest.mark.parametrize("what,payload,named", [GENOTYPE_FILES[0], GENOTYPE_FILES[1], GENOTYPE_FILES[9]],
                         ids=["show without cells.normal", "retrain without cells.reduce", "DARTS cells named nb201"])
def test_the_console_script_refuses_a_genotype_file_with_one_line(tmp_path, what, payload, named):
    import json

    path = tmp_path / "g.json"
    path.write_text(json.dumps(payload()))
    command = "retrain" if "retrain" in what else "show"
    proc = _nasrun(command, f"genotype={path}", "recipe=quick", f"hydra.run.dir={tmp_path / 'rt'}"
                   if command == "retrain" else "recipe.C=4", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and named in lines[0] and str(path) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "rt").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_benchmark_table_that_is_a_pipe_is_refused_not_waited_on(tmp_path):
    from conftest import TINY_SYNTH

    fifo = tmp_path / "table.csv"
    os.mkfifo(fifo)
    tiny = [o for o in TINY_SYNTH if not o.startswith(("space.", "supernet.layers"))]
    proc = _nasrun("search", "space=nb201", "benchmark=nb201", f"benchmark.path={fifo}", "search.epochs=1",
                   "supernet.layers=1", *tiny, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"benchmark.path={fifo}: is a named pipe (FIFO), not a regular file" in lines[0], \
        proc.stderr


def test_every_key_and_group_is_read_by_some_command():
    """A new top-level key or group must be placed in the table of what each command reads."""
    from dataclasses import fields

    from nasrun.config.compose_errors import groups
    from nasrun.config.overrides import READS
    from nasrun.config.schema import NasrunConf

    every = set().union(*READS.values())
    assert {f.name for f in fields(NasrunConf)} | set(groups()) <= every
    assert "genotype" not in READS["search"] and "recipe" not in READS["search"]
    assert not {"search", "supernet", "method", "estimator"} & READS["retrain"]
    assert READS["pipeline"] >= READS["search"] and "recipe" in READS["pipeline"]
