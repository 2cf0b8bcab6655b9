"""Hydra's composition errors rewritten as one line that names the key, the value and what is allowed.

Hydra answers a mistyped key with "Could not override ... To append use +key", a wrong type with
"Error merging override", and an unknown option with a list followed by the config search path.
This module turns each into a :class:`ConfigError` that says what to type instead, and refuses
``+key`` for keys no schema knows (they would be accepted and silently ignored).
"""

from __future__ import annotations

import difflib
import re
from importlib import resources
from typing import Any, Callable, Optional

from omegaconf import DictConfig

from nasrun.config.checks import shorten
from nasrun.errors import ConfigError
from nasrun.config.options import AXES, STORED_GROUPS, option_keys, owners_of

CONFIG_MODULE = "nasrun.conf"
#: ``compose(command, overrides)`` without the checks of this module (passed in by nasrun.config.schema).
Composer = Callable[[str, list[str]], Any]
#: Keys of the previous layout (one flat ``method`` group); typing one names what to type now.
RENAMED = {"method.alpha_init": "alpha_map.init", "method.param_reg": "alpha_map.param_reg",
           "supernet.nodes": "space.nodes (the space describes its cells)",
           **{f"method.{axis}": f"{axis}=NAME (the {axis} group)" for axis in AXES}}
REMOVED = {"method.product_point": "the products are always taken at the current weights",
           "method.product_batch": "the products always use the iteration's training batch"}

#: Config groups read from YAML files in the package (the axis groups come from ``nasrun.config.options``).
FILE_GROUPS = ("space", "dataset", "method", "recipe", "experiment")
_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def group_options(group: str) -> list[str]:
    """The options of a config group, as a user types them."""
    if group in STORED_GROUPS:
        return sorted(STORED_GROUPS[group])
    folder = resources.files(CONFIG_MODULE) / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def groups() -> list[str]:
    return [*FILE_GROUPS, *STORED_GROUPS]


def _parse(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # noqa: BLE001 - a malformed override
        raise ConfigError(f"cannot read the overrides: {one_line(exc)}") from None


def _group_overrides(overrides: list[str]) -> list[str]:
    """The overrides that choose group options (``method=amended``), for composing the chosen options."""
    chosen = []
    for text, parsed in zip(overrides, _parse(overrides)):
        if parsed.key_or_group in groups() and not parsed.is_sweep_override():
            chosen.append(text)
    return chosen


def one_line(exc: BaseException) -> str:
    """Condense a Hydra/OmegaConf error (often several lines) into one readable line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    skip = ("full_key:", "object_type=", "reference_type=", "Set the environment variable", "Config search path")
    text = "; ".join(ln for ln in lines if not ln.startswith(skip)) or type(exc).__name__
    text = text.replace("Available options in", "available options in").replace(":;", ":")
    return text if len(text) <= 400 else text[:397] + "..."


def known_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every leaf key of a composed config, dotted (``search.epochs``, ...)."""
    out = []
    for key in cfg:
        value = cfg._get_node(key)  # noqa: SLF001 - reads the node without resolving interpolations
        full = f"{prefix}{key}"
        out += known_keys(value, full + ".") if isinstance(value, DictConfig) else [full]
    return out


def nearest(key: str, candidates: list[str]) -> Optional[str]:
    """The candidate closest to a mistyped key, if any is close."""
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def check_appends(command: str, overrides: list[str], composer: Composer) -> None:
    """Refuse ``+key=value`` / ``++key=value`` for a key no schema has: it would run and be ignored."""
    for parsed in _parse(overrides):
        if not parsed.is_add() and not parsed.is_force_add():
            continue
        key = parsed.key_or_group
        if key.startswith("hydra") or key in groups():
            continue
        raise ConfigError(f"+{key}: a new key cannot be added, nasrun's configs have a fixed set of keys; "
                          + _suggestion(command, overrides, key, composer))


def explain(command: str, overrides: list[str], exc: BaseException, composer: Composer) -> ConfigError:
    """One ConfigError line for an error Hydra raised while composing."""
    text = str(exc)
    found = re.search(r"Could not override '([^']+)'", text) or re.search(r"Could not append to config\. "
                                                                           r"An item is already at '([^']+)'", text)
    if found:
        return ConfigError(unknown_key(command, overrides, found.group(1), composer))
    merging = re.search(r"Error merging override (\S+?)=(.*)", text)
    if merging:
        return ConfigError(_type_message(merging.group(1), merging.group(2), exc))
    option = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if option:
        return ConfigError(unknown_option(option.group(1), option.group(2)))
    return ConfigError(one_line(exc))


def unknown_option(group: str, value: str) -> str:
    options = group_options(group) if group in groups() else []
    near = nearest(value, options)
    hint = f"; did you mean {group}={near}?" if near else ""
    return f"{group}={shorten(value)} is not an option: one of {', '.join(options)}{hint}"


def unknown_key(command: str, overrides: list[str], key: str, composer: Composer) -> str:
    """Why ``key`` is not in the config, and what to type instead."""
    if key in REMOVED:
        return f"{key} no longer exists: {REMOVED[key]}"
    if key in RENAMED:
        return f"{key} is now {RENAMED[key]}"
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "method" and owners_of(parts[1]):
        owners = owners_of(parts[1])
        axis = owners[0].split("=")[0]
        return f"{key} is now {axis}.{parts[1]} (a key of {', '.join(owners)})"
    if len(parts) == 2 and parts[0] in STORED_GROUPS:
        return _axis_key(command, overrides, parts[0], parts[1], composer)
    return f"unknown key {key!r}; " + _suggestion(command, overrides, key, composer)


def _axis_key(command: str, overrides: list[str], axis: str, name: str, composer: Composer) -> str:
    chosen = composer(command, _group_overrides(overrides))[axis]
    keys = [k for k in option_keys(STORED_GROUPS[axis][chosen.name]) if k != "name"]
    owners = [o for o in owners_of(name) if o.startswith(axis + "=")]
    if owners:
        return (f"{axis}.{name} does not belong to {axis}={chosen.name} "
                f"(its keys: {', '.join(keys) or 'none'}); it is a key of {', '.join(owners)}")
    near = nearest(name, keys)
    hint = f"did you mean {axis}.{near}?" if near else f"its keys: {', '.join(keys) or 'none'}"
    return f"{axis}.{name} is not a key of {axis}={chosen.name}; {hint}"


def _suggestion(command: str, overrides: list[str], key: str, composer: Composer) -> str:
    try:
        candidates = known_keys(composer(command, _group_overrides(overrides)))
    except Exception:  # noqa: BLE001 - the suggestion is a courtesy; never fail on it
        candidates = []
    near: Optional[str] = nearest(key, candidates)
    if near:
        return f"did you mean {near}?"
    return f"`nasrun {command} --cfg job` lists every key"


def _type_message(key: str, value: str, exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    detail = str(cause).splitlines()[0] if str(cause) else ""
    wanted = re.search(r"could not be converted to (\w+)", detail)
    if wanted:
        allowed = "must be " + _TYPE_WORDS.get(wanted.group(1), wanted.group(1).lower())
    elif "cannot be assigned None" in detail or "is not Optional" in detail:
        allowed = "must not be null"
    elif "is not a subclass of" in detail or "Cannot assign" in detail:
        allowed = "must be a single value of the key's type, not a list or mapping"
    else:
        allowed = detail or "wrong type"
    return f"{key}={shorten(value)} is not allowed: {allowed}"
