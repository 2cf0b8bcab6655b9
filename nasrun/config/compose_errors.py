"""Hydra's composition errors rewritten as one line that names the key, the value and what is allowed.

Hydra answers a mistyped key with "Could not override ... To append use +key", a wrong type with
"Error merging override", and an unknown option with a list followed by the config search path.
This module turns each into a :class:`ConfigError` that says what to type instead, and refuses what
Hydra would accept and nasrun silently ignore or misread: ``+key`` for keys no schema knows, ``~key``,
``+hydra.key`` Hydra does not have, ``2`` or ``yes`` for a true/false key, an interpolation that
cannot be resolved. An override Hydra's grammar cannot read is named with the reason.
"""

from __future__ import annotations

import difflib
import re
import sys
from importlib import resources
from typing import Any, Callable, Optional

from omegaconf import DictConfig

from nasrun.config.checks import clip, shorten
from nasrun.errors import ConfigError
from nasrun.config.options import AXES, STORED_GROUPS, option_keys, owners_of

CONFIG_MODULE = "nasrun.conf"
#: ``compose(command, overrides)`` without the checks of this module (passed in by nasrun.config.schema).
Composer = Callable[..., Any]
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


def parse_overrides(tokens: list[str]) -> list:
    """Hydra's parse of each override; one that cannot be read is a ConfigError naming it and why."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    return [_parse_one(parser, text) for text in tokens]


def _parse_one(parser: Any, text: str) -> Any:
    if not text.strip():
        raise ConfigError(f"an empty argument ({text!r}) is not an override: give key=value, e.g. seed=1")
    key, sep, value = text.partition("=")
    if not sep and not text.startswith("~"):
        raise ConfigError(f"{clip(text)!r} is not an override: give key=value or group=option, e.g. seed=1")
    if sep and not key.strip("+~ "):
        raise ConfigError(f"{clip(text)} has no key before '=': give key=value, e.g. seed=1")
    try:
        return parser.parse_overrides([text])[0]
    except ValueError as exc:  # Python refuses to read an integer of more than 4300 digits
        digits = re.search(r"value has (\d+) digits", str(exc))
        if digits:
            raise ConfigError(f"{key}={value[:20]}... is not allowed: a number of {digits.group(1)} digits "
                              f"(Python reads at most {sys.get_int_max_str_digits()}; no key takes one that large)"
                              ) from None
        raise ConfigError(f"{clip(text)} cannot be read: {_parse_reason(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - Hydra's grammar refused it
        raise ConfigError(f"{clip(text)} cannot be read as an override: {_parse_reason(exc)} (the form is "
                          "key=value; quote a value with spaces or brackets: key='...')") from None


def _parse_reason(exc: BaseException) -> str:
    lines = [ln for ln in one_line(exc).split("; ") if not ln.startswith(("See https", "Error parsing override"))]
    text = re.sub(r" expecting \{[^}]*\}", "", "; ".join(lines))  # the grammar's token names say nothing to a user
    return text or type(exc).__name__


def _parse(overrides: list[str]) -> list:
    return parse_overrides(overrides)


def _group_overrides(overrides: list[str], hydra: bool = False) -> list[str]:
    """The overrides that choose group options (``method=amended``; with ``hydra``, ``hydra/launcher=...``
    too), for composing the chosen options."""
    chosen = []
    for text, parsed in zip(overrides, _parse(overrides)):
        key = parsed.key_or_group
        if (key in groups() or (hydra and key.startswith("hydra/"))) and not parsed.is_sweep_override() \
                and not parsed.is_delete():
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
    """Refuse what Hydra would accept and nasrun would silently ignore.

    ``+key`` for a key no schema has (nothing reads it), ``+key`` for a key that exists (set it),
    ``~key`` (the schema's default would come back: a key cannot be deleted), and ``+hydra.key``
    for a key Hydra does not have; ``++key`` sets a key that exists and is refused like an unknown
    key otherwise.
    """
    base: dict[bool, Any] = {}

    def composed(hydra: bool) -> Any:
        if hydra not in base:
            base[hydra] = composer(command, _group_overrides(overrides, hydra), hydra)
        return base[hydra]

    for parsed in _parse(overrides):
        key = parsed.key_or_group
        if "/" in key or key in groups():
            if parsed.is_delete() and key in groups():
                raise ConfigError(f"~{key}: a config group cannot be deleted; pick an option instead: "
                                  f"{key}={'|'.join(group_options(key)[:4])}...")
            continue
        hydra = key.split(".")[0] == "hydra"
        if parsed.is_delete():
            if not hydra:
                raise ConfigError(f"~{key}: a key cannot be deleted, nasrun's configs have a fixed set of keys "
                                  f"(it would silently take its default); set it instead: {key}=VALUE")
            continue
        if not parsed.is_add() and not parsed.is_force_add():
            continue
        exists = node_at(composed(hydra), key) is not None
        if exists and parsed.is_force_add():
            continue
        if exists:
            raise ConfigError(f"+{key}: the key exists, and + adds new keys only; set it: {key}=... (or ++{key}=...)")
        if hydra:
            if _open_dict(composed(True), key):
                continue
            raise ConfigError(f"+{key}: Hydra's config has no key {key} and would ignore it; "
                              f"`nasrun {command} --cfg hydra` lists Hydra's keys")
        if parsed.is_force_add():
            raise ConfigError(_unchosen(composed(False), key) or unknown_key(command, overrides, key, composer))
        raise ConfigError(f"+{key}: a new key cannot be added, nasrun's configs have a fixed set of keys; "
                          + _suggestion(command, overrides, key, composer))


def node_at(cfg: Any, key: str) -> Any:
    """The node at a dotted key of a composed config (interpolations unresolved), None where there is none."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or node._is_none() or part not in node:  # noqa: SLF001
            return None
        node = node._get_node(part)  # noqa: SLF001 - reads the node without resolving interpolations
    return node


def _open_dict(cfg: Any, key: str) -> bool:
    """Whether the nearest existing parent of ``key`` is a mapping open to new keys (``hydra.job.env_set``,
    ``hydra.callbacks``), not a schema."""
    from omegaconf import OmegaConf

    parts = key.split(".")[:-1]
    while parts and node_at(cfg, ".".join(parts)) is None:
        parts.pop()
    parent = node_at(cfg, ".".join(parts)) if parts else None
    return isinstance(parent, DictConfig) and OmegaConf.get_type(parent) in (dict, None)


def _unchosen(cfg: Any, key: str) -> Optional[str]:
    """Why a key of a group the command leaves null (a retraining's ``dataset``) cannot be set on its own."""
    top = key.split(".")[0]
    node = node_at(cfg, top)
    if "." not in key or not isinstance(node, DictConfig) or not node._is_none():  # noqa: SLF001
        return None
    example = (group_options(top) or ["NAME"])[0] if top in groups() else "NAME"
    return (f"{key}: no {top} is chosen (the run picks one when it starts), so it has no keys to set yet; "
            f"choose it with the key, e.g. {top}={example} {key}=...")


def check_booleans(cfg: DictConfig, overrides: list[str]) -> None:
    """A true/false key takes true or false only: OmegaConf would read ``2``, ``yes`` or ``on`` as true."""
    from omegaconf.nodes import BooleanNode

    for parsed in _parse(overrides):
        if parsed.is_delete() or parsed.is_sweep_override() or not isinstance(node_at(cfg, parsed.key_or_group),
                                                                              BooleanNode):
            continue
        value = parsed.value()
        if value is None or isinstance(value, bool) or (isinstance(value, str) and "${" in value):
            continue
        raise ConfigError(f"{parsed.key_or_group}={shorten(value)} is not allowed: must be true or false")


def unresolvable(cfg: Any, exc: BaseException) -> str:
    """One line for an interpolation that cannot be resolved (an unset variable, a loop): the key and why."""
    key = getattr(exc, "full_key", None) or ""
    node = node_at(cfg, key) if key else None
    raw = node._value() if node is not None else None  # noqa: SLF001 - the text as typed
    reason = one_line(exc)
    reason = re.sub(r"^\w+ raised while resolving interpolation: ", "", reason)
    if not key:
        return f"an interpolation cannot be resolved: {reason}"
    return f"{key}={shorten(raw)} cannot be resolved: {reason}"


def explain(command: str, overrides: list[str], exc: BaseException, composer: Composer) -> ConfigError:
    """One ConfigError line for an error Hydra raised while composing."""
    text = str(exc)
    appended = re.search(r"Could not append to config\. An item is already at '([^']+)'", text)
    if appended:
        key = appended.group(1)
        return ConfigError(f"+{key}: the key exists, and + adds new keys only; set it: {key}=... (or ++{key}=...)")
    found = re.search(r"Could not override '([^']+)'", text)
    if found:
        return ConfigError(unknown_key(command, overrides, found.group(1), composer))
    merging = re.search(r"Error merging override (\S+?)=(.*)", text)
    if merging:
        return ConfigError(_type_message(merging.group(1), merging.group(2), exc))
    option = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if option:
        return ConfigError(unknown_option(option.group(1), option.group(2), _listed_options(text)))
    preset = re.search(r"In 'method/(\w+)': ConfigKeyError raised while composing config:\s*Key '(\w+)' not in "
                       r"'(\w+)Conf'", text)
    if preset:  # the preset sets a key of its own choice of an axis, and the command line chose another option
        return ConfigError(_preset_key(overrides, *preset.groups()))
    if "Unexpected type for root: NoneType" in text:  # a key set under a group left null
        cfg = composer(command, _group_overrides(overrides))
        reasons = [_unchosen(cfg, parsed.key_or_group) for parsed in _parse(overrides)]
        return ConfigError(next((r for r in reasons if r), one_line(exc)))
    return ConfigError(one_line(exc))


def _preset_key(overrides: list[str], method: str, key: str, option: str) -> str:
    """method=NAME sets a key of the option its preset picks; the command line picked another, without that key."""
    for text in overrides:
        group, _, chosen = text.lstrip("+~").partition("=")
        schema = AXES.get(group, {}).get(chosen)
        if schema is not None and schema.__name__ == f"{option}Conf":
            return (f"{group}={chosen} is not allowed with method={method}: the preset sets {group}.{key}, which "
                    f"{group}={chosen} does not have; keep the preset's {group} and set its keys instead")
    return f"method={method} sets {key}, which the chosen {option} option does not have"


def _listed_options(text: str) -> list[str]:
    """The options Hydra lists under "Available options in ..." (its own groups: hydra/launcher, hydra/sweeper)."""
    listed = re.search(r"Available options in '[^']+':\n((?:\t[^\n]+\n?)+)", text)
    return [line.strip() for line in listed.group(1).splitlines() if line.strip()] if listed else []


def unknown_option(group: str, value: str, listed: list[str] | None = None) -> str:
    options = group_options(group) if group in groups() else sorted(listed or [])
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
