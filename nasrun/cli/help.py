"""`nasrun <command> --help`: the config groups with their options, and the keys of the chosen components.

Each key is shown with its default and a one-line description taken from the schema itself: the
comment on the line above the field (or at its end) in ``nasrun/config/schema.py`` and ``nasrun/config/options.py``.
Nothing here imports torch, so help answers at once.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
from functools import lru_cache
from typing import Any

from nasrun.config.compose_errors import group_options, groups
from nasrun.config.compose import compose, to_typed
from nasrun.config.schema import one_line

#: Groups whose chosen option's keys are listed (the rest are listed as options only).
KEYED_GROUPS = ("space", "dataset", "estimator", "perturbation", "alpha_map", "schedule", "benchmark", "search",
                "supernet", "recipe")


@lru_cache(maxsize=None)
def field_comments(schema: type) -> dict[str, str]:
    """Field name -> the comment written beside or above it in the class's source (one line)."""
    try:
        source = inspect.getsource(schema)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and not stripped.startswith(("def ", "return", "@")):
            trailing = _trailing_comment(line)
            text = " ".join(pending + ([trailing] if trailing else []))
            if text:
                out[match.group(1)] = text
        pending = []
    return out


def _trailing_comment(line: str) -> str:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return ""
    return next((t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT), "")


def _keys(node: Any, prefix: str) -> list[str]:
    if not dataclasses.is_dataclass(node):
        return []
    comments = {k: v for cls in reversed(type(node).__mro__) for k, v in field_comments(cls).items()}
    doc = (inspect.getdoc(type(node)) or "").split("\n")[0]
    lines = [f"  {prefix}: {doc}" if doc else f"  {prefix}:"]
    for f in dataclasses.fields(node):
        if f.name == "name":
            continue
        value = getattr(node, f.name)
        shown = repr(value) if not isinstance(value, (list, dict)) or len(repr(value)) < 60 else "[...]"
        text = comments.get(f.name, "")
        lines.append(f"    {prefix}.{f.name} = {shown}" + (f"   # {text}" if text else ""))
    return lines


def _top_level_keys(cfg: Any, names: tuple[str, ...]) -> list[str]:
    """``  key = value   # what it does`` for root keys that need their description shown."""
    comments = field_comments(type(cfg))
    return [f"  {name} = {getattr(cfg, name)!r}" + (f"   # {comments[name]}" if name in comments else "")
            for name in names]


def render(command: str, overrides: list[str]) -> str:
    """The help text for ``nasrun <command> [overrides] --help``."""
    try:
        cfg = to_typed(compose(command, overrides or (["genotype=DARTS_V2"] if command != "search" else [])))
    except Exception as exc:  # noqa: BLE001 - help must answer even for a config that does not validate
        return f"nasrun {command}: the overrides do not compose ({one_line(exc)}); showing the defaults\n" + \
            render(command, [])
    lines = [f"usage: nasrun {command} [group=option ...] [key=value ...] [-m for a sweep] [--cfg job]", "",
             "config groups (chosen option in brackets):"]
    for group in groups():
        chosen = getattr(getattr(cfg, group, None), "name", None)
        options = [f"[{o}]" if o == chosen else o for o in group_options(group)]
        lines.append(f"  {group:<13} {', '.join(options)}")
    lines += ["", "keys of the chosen components (key = default   # what it does):"]
    for group in KEYED_GROUPS:
        lines += _keys(getattr(cfg, group, None), group)
    lines += ["", f"top-level keys: seed={cfg.seed}, device={cfg.device!r}, threads={cfg.threads}, "
                  f"logger={cfg.logger!r}, progress={cfg.progress}" + (", genotype=..." if command != "search" else ""),
              *_top_level_keys(cfg, ("precision", "channels_last")),
              "", f"`nasrun {command} --cfg job [overrides]` prints the whole composed config; "
                  f"`nasrun {command} --hydra-help` Hydra's own flags."]
    return "\n".join(lines)
