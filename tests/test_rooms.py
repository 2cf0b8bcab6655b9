"""The axis groups: inapplicable and old keys refused with a pointer, registries that agree, no import circles."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import nasrun
from nasrun.config.compose_errors import group_options
from nasrun.config.schema import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.methods.registry import IMPLEMENTATIONS
from nasrun.config.options import AXES

PRESETS = group_options("method")


def _foreign_key(axis: str, chosen: type) -> tuple[str, str] | None:
    """A key of another option of ``axis`` that the chosen option does not have, and that option's name."""
    own = {f.name for f in fields(chosen)}
    for name, schema in AXES[axis].items():
        for f in fields(schema):
            if f.name not in own:
                return f.name, name
    return None


@pytest.mark.parametrize("preset", PRESETS)
def test_a_key_of_an_option_the_preset_did_not_pick_is_refused_naming_its_owner(preset):
    cfg = to_typed(compose("search", [f"method={preset}"]))
    refused = 0
    for axis in AXES:
        found = _foreign_key(axis, type(getattr(cfg, axis)))
        if found is None:
            continue
        key, owner = found
        with pytest.raises(ConfigError) as err:
            compose("search", [f"method={preset}", f"{axis}.{key}=1"])
        message = str(err.value)
        assert f"{axis}.{key}" in message and f"{axis}={owner}" in message, message
        assert "\n" not in message
        refused += 1
    assert refused >= 3  # every preset leaves keys of at least three axes unpicked


@pytest.mark.smoke
def test_the_presets_pick_one_option_per_axis():
    picks = {p: to_typed(compose("search", [f"method={p}"])) for p in PRESETS}
    assert type(picks["amended"].estimator).__name__ == "AmendedConf"
    assert (picks["nasp"].estimator.name, picks["nasp"].perturbation.name, picks["nasp"].alpha_map.name) == (
        "proximal", "discrete", "argmax")
    assert (picks["sdarts_adv"].perturbation.name, picks["pdarts"].schedule.name) == ("adversarial", "progressive")
    assert picks["zarts"].estimator.name == "mgs" and picks["darts_2nd"].estimator.name == "second_order"
    assert all(cfg.method.name == p for p, cfg in picks.items())


def test_an_axis_option_can_be_swapped_under_a_preset():
    cfg = to_typed(compose("search", ["method=zarts", "estimator=rs", "estimator.rs_lr=0.5"]))
    assert (cfg.estimator.name, cfg.estimator.rs_lr, cfg.search.arch_warmup_epochs) == ("rs", 0.5, 10)
    cfg = to_typed(compose("search", ["method=amended", "perturbation=random", "estimator.eta=0.3"]))
    assert (cfg.estimator.eta, cfg.perturbation.epsilon) == (0.3, 0.3)


@pytest.mark.parametrize("old,new", [
    ("method.eta=0.5", "estimator.eta"),
    ("method.epsilon=0.1", "perturbation.epsilon"),
    ("method.stage_keep=[3,2,1]", "schedule.stage_keep"),
    ("method.alpha_init=0.5", "alpha_map.init"),
    ("method.estimator=amended", "estimator=NAME"),
    ("method.update_every=3", "estimator.update_every"),
])
def test_a_key_of_the_old_flat_method_group_names_the_new_key(old, new):
    with pytest.raises(ConfigError, match=new.replace(".", r"\.")):
        compose("search", [old])


def test_every_option_has_an_implementation_and_nothing_else_does():
    for axis, options in AXES.items():
        assert set(options.values()) == set(IMPLEMENTATIONS[axis]), axis


def test_the_option_name_cannot_be_changed_by_hand():
    with pytest.raises(ConfigError, match="estimator.name"):
        to_typed(compose("search", ["method=amended", "estimator.name=darts"]))


# ------------------------------------------------------------------------------------ imports
def _modules() -> list[str]:
    root = Path(nasrun.__file__).parent
    return ["nasrun"] + [m.name for m in pkgutil.walk_packages([str(root)], prefix="nasrun.")
                         if not m.name.startswith("nasrun.conf")]


def _imports(module: str) -> set[str]:
    """Every nasrun module ``module`` imports, at the top or inside a function."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text())
    package = module if spec.submodule_search_locations else module.rpartition(".")[0]
    known = set(_modules())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            for a in node.names:
                name = f"{base}.{a.name}"
                out.add(name if name in known else base)
    return {m for m in out if m in known and m != module}


@pytest.mark.smoke
def test_the_import_graph_has_no_cycle():
    graph = {m: _imports(m) for m in _modules()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", [m for m in _modules() if m != "nasrun.__main__"])
def test_every_module_imports_on_its_own(module):
    saved = {k: v for k, v in sys.modules.items() if k == "nasrun" or k.startswith("nasrun.")}
    for k in saved:
        del sys.modules[k]
    try:
        importlib.import_module(module)
    finally:
        for k in [k for k in sys.modules if k == "nasrun" or k.startswith("nasrun.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_no_function_of_the_search_loop_is_over_sixty_lines():
    for module in ("nasrun.search.loop", "nasrun.search.state", "nasrun.methods.schedules", "nasrun.train.steps"):
        tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{module}.{node.name} has {length} lines"


def test_the_op_names_known_without_torch_are_the_ops_nasrun_builds():
    from nasrun.spaces.names import OP_NAMES
    from nasrun.spaces.ops import OPS

    assert list(OP_NAMES) == list(OPS)


def test_checking_a_command_line_does_not_import_torch():
    import subprocess

    code = ("import sys\nfrom nasrun.config.schema import compose, to_typed\n"
            "to_typed(compose('search', ['method=amended', 'space=nb201', 'estimator.eta=0.5']))\n"
            "try:\n    compose('search', ['serach.epochs=2'])\nexcept Exception:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
