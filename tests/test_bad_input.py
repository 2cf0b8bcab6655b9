"""Bad command lines: each ends in one ConfigError line that names the key (composed in-process, so it stays fast),
and a few through the real console script for the exit status and the absence of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nasrun.config.schema import compose, to_typed
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
])
def test_the_console_script_exits_2_with_one_line(tmp_path, args, named):
    proc = _nasrun(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and named in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path("/nonexistent").exists()
