"""Command-line overrides: which arguments are overrides, which keys each command reads, the jobs a sweep runs.

Every job a command line asks for is composed and validated before anything starts, so a bad value
in the fifth job of a sweep fails in a second, not after four searches. Sweeps are expanded with
Hydra's public override API, a ``glob`` over a group's options included; a sweep of nothing is
refused (Hydra would launch no job and succeed), and an ``interval`` needs a sampling sweeper. A
key typed for a command that never reads it (:data:`READS`) is refused, naming the commands that do.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Iterable

from nasrun.config.checks import clip, shorten
from nasrun.errors import ConfigError

#: More jobs than this are not composed one by one ahead of time (each value is still checked).
MAX_PRECHECKED_JOBS = 256


#: What every command reads, by the first part of a key (a top-level key or a config group).
#: ``progress`` is a display switch every command takes, though only the search draws a bar.
SHARED_PARTS = frozenset({"seed", "device", "threads", "precision", "channels_last", "progress", "logger",
                          "dataset", "space", "experiment", "hydra"})
#: What the search reads: its loop, the supernet, the method and its axes, the benchmark table.
SEARCH_PARTS = frozenset({"search", "supernet", "method", "estimator", "perturbation", "alpha_map", "schedule",
                          "selection", "benchmark"})
#: What a retraining reads: the genotype and the recipe.
RETRAIN_PARTS = frozenset({"genotype", "recipe"})
#: The parts each command reads; a key of another part typed on the command line would be ignored.
#: A pipeline reads both stages' parts but no genotype: it retrains the one its own search finds.
READS = {
    "search": SHARED_PARTS | SEARCH_PARTS,
    "retrain": SHARED_PARTS | RETRAIN_PARTS,
    "pipeline": SHARED_PARTS | SEARCH_PARTS | {"recipe"},
}
_WHY_NOT = {("pipeline", "genotype"): "it retrains the genotype its own search finds"}


def check_command_reads(command: str, tokens: list[str]) -> None:
    """Refuse a key typed on the command line that ``command`` never reads (``nasrun search recipe.epochs=3``),
    naming the commands that do; keys a preset sets for another stage are not typed and pass."""
    reads = READS.get(command)
    if reads is None:
        return
    for text, parsed in zip(tokens, _parse(tokens)):
        part = parsed.key_or_group.replace("/", ".").split(".")[0]
        if part in reads or not any(part in parts for parts in READS.values()):
            continue  # read here, or read nowhere: an unknown key, named with its nearest when composed
        readers = [f"nasrun {c}" for c, parts in READS.items() if part in parts]
        why = _WHY_NOT.get((command, part), "the value would be ignored")
        who = f"; {' and '.join(readers)} read{'s' if len(readers) == 1 else ''} it" if readers else ""
        raise ConfigError(f"{clip(text, 120)}: nasrun {command} does not read {part} ({why}){who}")


def quote_genotype(args: list[str]) -> list[str]:
    """``genotype=|op~0|+|...|`` (an NB201 arch string) quoted for Hydra, whose grammar reserves ``|``, ``~``, ``+``."""
    out = []
    for a in args:
        key, sep, value = a.partition("=")
        if sep and key.lstrip("+") == "genotype" and value.startswith("|") and "'" not in value:
            a = f"{key}='{value}'"
        out.append(a)
    return out


def hydra_arguments(args: list[str]) -> list[str]:
    """The arguments in the order Hydra's parser takes them (its flags, then the overrides), each checked.

    Hydra's parser reads the overrides as one run of positional arguments, so ``seed=1 -m x=2`` would
    end in a usage text; a flag it does not know, a bad flag value, an empty argument or an override
    its grammar refuses is a ConfigError line naming it.
    """
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    flags, overrides = _split_flags(parser, args)

    def refuse(message: str) -> None:
        raise ConfigError(message.replace("unrecognized arguments", "unknown flag"))

    parser.error = refuse  # type: ignore[method-assign] - one line, not argparse's usage text and exit
    given = parser.parse_args(flags)
    modes = [flag for flag, on in (("--run", given.run), ("--multirun", given.multirun), ("--cfg", given.cfg),
                                   ("--info", given.info is not None), ("--shell-completion", given.shell_completion))
             if on]
    if len(modes) > 1:  # Hydra would raise a ValueError with a traceback
        raise ConfigError(f"{' and '.join(modes)} cannot be given together: one of --run, --multirun, --cfg, --info, "
                          "--shell-completion")
    _parse(overrides)
    return [*flags, *overrides]


def _split_flags(parser, args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values, the overrides), each in the order given."""
    actions = {opt: a for a in parser._actions for opt in a.option_strings}  # noqa: SLF001 - argparse's table
    flags: list[str] = []
    overrides: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-") or arg == "-":
            overrides.append(arg)
            continue
        flags.append(arg)
        action = actions.get(arg)
        if action is None or action.nargs == 0 or not rest:
            continue
        if action.nargs != "?" or rest[0] in (action.choices or ()):
            flags.append(rest.pop(0))
    return flags, overrides


def override_tokens(args: Iterable[str]) -> list[str]:
    return [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]


def _parse(tokens: list[str]) -> list:
    from nasrun.config.compose_errors import parse_overrides

    return parse_overrides(tokens)


def _values(text: str, parsed) -> list[str] | None:
    """The values of a sweep override, or None when only its sweeper can list them (an ``interval``).

    A sweep of nothing (``range(0,0)``, a ``glob`` that matches no option, ``glob`` over a key that is
    not a config group) is refused: Hydra would launch no job and report success.
    """
    from hydra.core.override_parser.types import Glob

    if not parsed.is_discrete_sweep():
        return None
    key = parsed.key_or_group
    if isinstance(parsed.value(), Glob):
        return _glob_values(text, key, parsed.value())
    values = list(parsed.sweep_string_iterator())
    if not values:
        raise ConfigError(f"{clip(text)} sweeps over no value, so no job would run: give at least one "
                          f"(range(start, stop) needs stop beyond start), e.g. {key}=0,1")
    return values


def _glob_values(text: str, key: str, glob) -> list[str] | None:
    from nasrun.config.compose_errors import group_options, groups

    if key.startswith("hydra"):
        return None  # Hydra's own groups: its sweeper lists them
    if key not in groups():
        raise ConfigError(f"{clip(text)}: glob() picks options of a config group ({', '.join(groups())}); "
                          f"{key} is a key: list its values instead, e.g. {key}=0,1,2")
    options = group_options(key)
    matched = glob.filter(options)
    if not matched:
        raise ConfigError(f"{clip(text)} matches no option of {key}, so no job would run: one of "
                          f"{', '.join(options)}")
    return matched


def jobs(tokens: list[str], multirun: bool) -> list[list[str]]:
    """The override lists of the jobs to check: every combination, or each swept value on its own
    when there are too many combinations; sweeps only a sweeper can expand are left out."""
    parsed = _parse(tokens)
    if not multirun:
        return [tokens]
    fixed, swept = [], []
    sampler = any(o.key_or_group == "hydra/sweeper" for o in parsed)
    for text, o in zip(tokens, parsed):
        if not o.is_sweep_override():
            fixed.append(text)
            continue
        if not o.is_discrete_sweep() and not sampler:
            raise ConfigError(f"{clip(text)}: an interval() needs a sweeper that samples (hydra/sweeper=...); "
                              f"the basic sweeper runs listed values: {o.key_or_group}=0.1,0.5 or range(...)")
        values = _values(text, o)
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


#: Room left below the system's path limit for what a run writes inside its folder (stage folders,
#: ``.hydra/``, temp files, TensorBoard event files).
PATH_ROOM = 256
OUTPUT_DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def check_output_dirs(tokens: list[str], resolve: Callable[[str, str], str] | None = None) -> None:
    """``hydra.run.dir`` / ``hydra.sweep.dir`` must name a folder that can be made and written.

    ``resolve(key, value)`` gives the folder a value with an interpolation names (``${oc.env:X}``);
    without it such a value is left to the run.
    """
    for text in tokens:
        key, _, value = text.partition("=")
        if key.lstrip("+") not in OUTPUT_DIR_KEYS:
            continue
        if not value.strip():
            raise ConfigError(f"{key}= is empty: name a folder for the run (it would write into the current one)")
        if "${" in value:
            if resolve is None:
                continue
            value = resolve(key.lstrip("+"), value)
        problem = _too_long(value) or _unwritable(Path(value).expanduser())
        if problem:
            raise ConfigError(f"{key}={shorten(value, 120)} cannot be used: {problem}")


def _too_long(value: str) -> str | None:
    """The path or one of its names past what the file system takes (ENAMETOOLONG when the run starts)."""
    import os

    path = os.path.abspath(os.path.expanduser(value))
    path_max, name_max = _limits(path)
    longest = max((len(part.encode()) for part in Path(path).parts), default=0)
    if longest > name_max:
        return f"it has a name of {longest} bytes; a file system takes at most {name_max}"
    if len(path.encode()) > path_max - PATH_ROOM:
        return (f"its absolute path has {len(path.encode())} bytes; at most {path_max - PATH_ROOM} (the system's "
                f"limit of {path_max}, less room for the files a run writes inside)")
    return None


def _limits(path: str) -> tuple[int, int]:
    """PATH_MAX and NAME_MAX of the file system the nearest existing parent of ``path`` is on."""
    import os

    probe = path
    while probe and not os.path.isdir(probe):  # isdir answers False for an overlong path; never raises
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        return os.pathconf(probe or "/", "PC_PATH_MAX"), os.pathconf(probe or "/", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no such name
        return 4096, 255


def _unwritable(path: Path) -> str | None:
    import os

    probe = path
    try:
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
    except OSError as exc:  # e.g. a loop of symbolic links
        return f"{exc.strerror or exc}"
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
