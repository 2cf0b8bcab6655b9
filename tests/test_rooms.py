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
from nasrun.config.compose import compose, to_typed
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


def test_the_op_names_known_without_torch_are_the_ops_nasrun_builds():
    from nasrun.spaces.names import OP_NAMES
    from nasrun.spaces.ops import OPS

    assert list(OP_NAMES) == list(OPS)


def test_checking_a_command_line_does_not_import_torch():
    import subprocess

    code = ("import sys\nfrom nasrun.config.compose import compose, to_typed\n"
            "to_typed(compose('search', ['method=amended', 'space=nb201', 'estimator.eta=0.5']))\n"
            "try:\n    compose('search', ['serach.epochs=2'])\nexcept Exception:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# ------------------------------------------------------------------------------- capabilities
def _option_classes() -> dict[str, dict[str, type]]:
    from nasrun.config.options import STORED_GROUPS

    return STORED_GROUPS


def _axis_base(schema: type) -> type:
    """The class that names the axis (``axis = ...`` in its own body): where the refusing defaults live."""
    return next(c for c in schema.__mro__ if "axis" in vars(c))


def _declared_by(schema: type, capability: str) -> type:
    return next(c for c in schema.__mro__ if capability in vars(c))


def _default(schema: type) -> object:
    """An option with its defaults (a benchmark table needs a path to exist as an object)."""
    return schema(**({"path": "table.csv"} if "path" in {f.name for f in fields(schema)} else {}))


def _sample_args() -> dict[str, tuple]:
    from nasrun.config.schema import SpaceConf

    return {"space_refusal": (SpaceConf(),)}


_SAMPLE_ARGS = _sample_args()  # what a capability method is asked about


@pytest.mark.smoke
def test_every_option_declares_every_capability_of_its_axis():
    """Declared on the option itself, or on a family base that is not an option (the ZARTS rules share theirs);
    never inherited from the axis base's refusing default or from a sibling option (SDARTS-ADV from -RS)."""
    groups = _option_classes()
    registered = {schema for options in groups.values() for schema in options.values()}
    for group, options in groups.items():
        for name, schema in options.items():
            base = _axis_base(schema)
            assert base.axis == group and base.capabilities, (group, name)
            option = _default(schema)
            for capability in base.capabilities:
                owner = _declared_by(schema, capability)
                assert owner is schema or (owner not in registered and base in owner.__mro__[1:]), (
                    f"{group}={name} does not declare {capability} (it comes from {owner.__name__})")
                answer = getattr(option, capability)
                if callable(answer):  # a method answers for the option's values
                    answer(*_SAMPLE_ARGS.get(capability, ()))
                else:
                    assert isinstance(answer, bool), (group, name, capability)


def test_every_option_class_is_registered_under_its_axis():
    """An option (a subclass of an axis base with its own ``name``) that is missing from AXES would never be
    offered; a family base without a name (ZeroOrderConf) is not an option."""
    from nasrun.config.options import AxisOption, BenchmarkOption

    def below(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in [sub, *below(sub)]]

    groups = _option_classes()
    for cls in below(AxisOption) + below(BenchmarkOption):
        if "axis" in vars(cls) or "name" not in getattr(cls, "__dataclass_fields__", {}):
            continue
        assert groups[cls.axis].get(cls.__dataclass_fields__["name"].default) is cls, cls.__name__


def test_the_capabilities_answer_what_the_checks_ask():
    from nasrun.config.options import AmendedConf, SecondOrderConf, options_with

    torchrun = {axis: options_with(axis, "runs_under_torchrun") for axis in AXES}
    assert torchrun == {"estimator": ["first_order", "second_order", "amended"], "perturbation": ["none", "random"],
                        "alpha_map": ["softmax"], "schedule": ["single", "progressive"], "selection": ["argmax"]}
    assert options_with("selection", "tunes") == ["perturbation"]
    assert options_with("perturbation", "single_path") == ["discrete"]
    assert options_with("alpha_map", "single_path") == ["argmax", "gumbel_hard"]
    assert options_with("schedule", "changes_cell_count") == ["progressive"]
    exact = SecondOrderConf(hvp="exact").double_backward()
    assert exact is not None and (exact.setting, exact.instead) == ("estimator.hvp=exact",
                                                                    "estimator.hvp=finite_difference")
    assert AmendedConf(hvp="exact").double_backward() == exact
    assert AmendedConf(hvp="exact", eta=0.0).double_backward() is None  # eta = 0 takes no products
    assert [n for n, s in AXES["estimator"].items() if _default(s).double_backward() is not None] == []


def test_an_option_that_declares_nothing_is_refused():
    from dataclasses import dataclass

    from nasrun.config.options import (AlphaMapOption, BenchmarkOption, EstimatorOption, PerturbationOption,
                                       ScheduleOption)
    from nasrun.config.schema import SpaceConf

    @dataclass
    class NewEstimator(EstimatorOption):
        name: str = "new"

    assert not any(base.runs_under_torchrun for base in (EstimatorOption, PerturbationOption, AlphaMapOption,
                                                         ScheduleOption))
    assert NewEstimator().double_backward() is not None  # stays eager and off the ranks' global BatchNorm
    assert PerturbationOption.single_path and AlphaMapOption.single_path  # per-edge parameters: always correct
    assert ScheduleOption.changes_cell_count  # refused on per-position spaces
    assert BenchmarkOption().space_refusal(SpaceConf()) is not None


#: Where option names may be compared and schema classes named: the options themselves and their implementations.
_CAPABILITY_HOMES = ("config/options.py", "methods/")


def _option_name_use(node: ast.AST, names: dict[str, set[str]], schemas: set[str], keys: set[str]) -> str | None:
    """Why ``node`` keeps a capability outside the options, or None. ``keys``: the fields only some options of an
    axis have (``getattr(estimator, "hvp", None)`` asks which option it is, by its keys)."""
    every = set().union(*names.values()) - {"none"}  # "none" is also an op; alone it names no capability

    def literals(n: ast.AST) -> list | None:
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            return [n.value]
        if isinstance(n, (ast.Tuple, ast.List, ast.Set)) and n.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in n.elts):
            return [e.value for e in n.elts]
        return None

    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        if any(isinstance(s, ast.Attribute) and s.attr == "name" for s in sides):
            for s in sides:
                found = literals(s)
                if found and set(found) & every:
                    return f"compares .name with {found}"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance", "issubclass"):
        named = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node.args[1])
                 if isinstance(n, (ast.Name, ast.Attribute))} if len(node.args) > 1 else set()
        if named & schemas:
            return f"{node.func.id} against {sorted(named & schemas)}"
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
            and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value in keys):
        return f"{node.func.id} probes the option key {node.args[1].value!r}"
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        found = literals(node)
        if found and set(found) & every and any(set(found) <= axis for axis in names.values()):
            return f"a list of option names {found}"
    if isinstance(node, ast.Dict):
        keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        if keys and set(keys) & every and any(set(keys) <= axis for axis in names.values()):
            return f"a table keyed by option names {keys}"
    return None


def test_no_capability_lists_of_option_names_outside_the_options():
    """The loops and checks ask the option (``option.runs_under_torchrun``, ``estimator.double_backward()``, ...);
    a list of names or an isinstance against a schema elsewhere would miss a new option silently."""
    from nasrun.config import options

    names = {group: set(opts) for group, opts in _option_classes().items()}
    schemas = {n for n, c in vars(options).items() if isinstance(c, type) and c.__module__ == options.__name__}
    keys = {k for opts in AXES.values() for schema in opts.values() for k in options.option_keys(schema)
            if not all(k in options.option_keys(other) for other in opts.values())}
    root = Path(nasrun.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(_CAPABILITY_HOMES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            why = _option_name_use(node, names, schemas, keys)
            if why:
                found.append(f"{rel}:{node.lineno}: {why}")
    assert not found, "\n".join(found)


def test_no_function_is_over_sixty_lines_and_no_module_over_five_hundred_without_a_reason():
    """Every module under nasrun/: no function or method over 60 lines (``def`` to its last line), and no
    module over 500 lines unless its docstring says why with the words "long because" and the reason
    (for example "This module is long because ...")."""
    root = Path(nasrun.__file__).parent
    long_functions, long_modules = [], []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        module = path.relative_to(root.parent).with_suffix("").as_posix().replace("/", ".")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long_functions.append(f"{module}.{node.name}: {length} lines")
        lines = len(text.splitlines())
        if lines > 500 and "long because" not in (ast.get_docstring(tree) or ""):
            long_modules.append(f"{module}: {lines} lines")
    assert not long_functions, long_functions
    assert not long_modules, long_modules


def test_one_list_of_dataset_names_and_one_darts_op_list():
    from nasrun.config import schema
    from nasrun.data.load import _loaders
    from nasrun.data.names import DATASET_NAMES
    from nasrun.spaces import ops
    from nasrun.spaces.names import DARTS_OPS

    assert sorted(_loaders()) == sorted(DATASET_NAMES)
    assert schema.DATASETS is DATASET_NAMES
    assert ops.DARTS_OPS is DARTS_OPS and schema.DARTS_PRIMITIVES == list(DARTS_OPS)
    # the order is the alpha column order of the DARTS space
    assert DARTS_OPS == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                         "dil_conv_3x3", "dil_conv_5x5")
