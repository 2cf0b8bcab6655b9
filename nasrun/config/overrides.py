"""Command-line overrides: which tokens are overrides, and the jobs a sweep will run.

Every job a command line asks for is composed and validated before anything starts, so a bad value
in the fifth job of a sweep fails in a second, not after four searches. Sweeps are expanded with
Hydra's public override API; a sweep this cannot list (an Optuna ``interval``, a ``glob``) is left
to the sweeper, and each of its jobs is validated when it starts.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable

from nasrun.config.checks import shorten
from nasrun.errors import ConfigError

#: More jobs than this are not composed one by one ahead of time (each value is still checked).
MAX_PRECHECKED_JOBS = 256


def quote_genotype(args: list[str]) -> list[str]:
    """``genotype=|op~0|+|...|`` (an NB201 arch string) quoted for Hydra, whose grammar reserves ``|``, ``~``, ``+``."""
    out = []
    for a in args:
        key, sep, value = a.partition("=")
        if sep and key.lstrip("+") == "genotype" and value.startswith("|") and "'" not in value:
            a = f"{key}='{value}'"
        out.append(a)
    return out


def override_tokens(args: Iterable[str]) -> list[str]:
    return [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]


def _parse(tokens: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(tokens)
    except Exception as exc:  # noqa: BLE001 - a malformed override
        from nasrun.config.compose_errors import one_line

        raise ConfigError(f"cannot read the overrides: {one_line(exc)}") from None


def _values(parsed) -> list[str] | None:
    """The values of a sweep override, or None when only its sweeper can list them."""
    if not parsed.is_discrete_sweep():
        return None
    try:
        return list(parsed.sweep_string_iterator())
    except Exception:  # noqa: BLE001 - glob() needs Hydra's config loader
        return None


def jobs(tokens: list[str], multirun: bool) -> list[list[str]]:
    """The override lists of the jobs to check: every combination, or each swept value on its own
    when there are too many combinations; sweeps only a sweeper can expand are left out."""
    parsed = _parse(tokens)
    if not multirun:
        return [tokens]
    fixed, swept = [], []
    for text, o in zip(tokens, parsed):
        if not o.is_sweep_override():
            fixed.append(text)
            continue
        values = _values(o)
        if values is not None:
            key = text.split("=", 1)[0]
            swept.append([f"{key}={v}" for v in values])
    combos = 1
    for values in swept:
        combos *= len(values)
    if combos <= MAX_PRECHECKED_JOBS:
        return [[*fixed, *combo] for combo in itertools.product(*swept)] or [fixed]
    return [[*fixed, item] for values in swept for item in values]


def swept_free_keys(tokens: list[str]) -> list[str]:
    """The keys every job shares (left out of job-folder names; multirun.yaml records them)."""
    return [o.key_or_group for o in _parse(tokens) if not o.is_sweep_override()
            and not o.key_or_group.startswith("hydra")]


def check_output_dirs(tokens: list[str]) -> None:
    """``hydra.run.dir`` / ``hydra.sweep.dir`` must name a folder that can be made and written."""
    for text in tokens:
        key, _, value = text.partition("=")
        if key.lstrip("+") not in ("hydra.run.dir", "hydra.sweep.dir"):
            continue
        if not value.strip():
            raise ConfigError(f"{key}= is empty: name a folder for the run (it would write into the current one)")
        problem = _unwritable(Path(value).expanduser())
        if problem:
            raise ConfigError(f"{key}={shorten(value)} cannot be used: {problem}")


def _unwritable(path: Path) -> str | None:
    import os

    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def is_multirun(args: Iterable[str]) -> bool:
    """``-m``/``--multirun`` among the arguments: a sweep."""
    return any(a in ("-m", "--multirun") for a in args)


def name_jobs_by_swept_keys(args: list[str]) -> list[str]:
    """Leave the keys every job shares out of the sweep's job-folder names (multirun.yaml records them)."""
    key = "hydra.job.config.override_dirname.exclude_keys"
    tokens = override_tokens(args)
    if any(a.startswith(key + "=") for a in args) or not tokens:
        return args
    fixed = swept_free_keys(tokens)
    if not fixed:
        return args
    excluded = ["hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir", "progress", "device"]
    excluded += [k for k in fixed if k not in excluded]
    first = args.index(tokens[0])  # beside the other overrides, for Hydra's argument parser
    return [*args[:first], f"{key}=[{','.join(excluded)}]", *args[first:]]
