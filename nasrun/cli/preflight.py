"""Every job a command line asks for, composed and validated before a Hydra application starts.

A bad value in the fifth job of a sweep fails in a second, not after four searches: each job is
composed, typed (every schema check), and given the checks of its command (benchmark file, what
torchrun supports, the genotype a retrain reads, a pipeline's two stages).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nasrun.config.compose import compose, to_typed
from nasrun.config.members import ENGINES
from nasrun.config.overrides import check_command_reads, check_output_dirs, is_multirun, jobs, override_tokens
from nasrun.errors import ConfigError, NasrunError


def check_command_line(command: str, args: list[str]) -> None:
    """Compose and validate every job of ``nasrun <command> args``; raise NasrunError on the first problem."""
    tokens = override_tokens(args)
    check_command_reads(command, tokens)
    check_population(command, tokens, is_multirun(args))
    check_output_dirs(tokens)
    listed = jobs(tokens, is_multirun(args))
    stacked = any(t.lstrip("+") == "hydra.launcher.engine=stacked" for t in tokens)
    for job in listed:
        typed = to_typed(compose(command, job))
        check_job(command, typed, job)
        if stacked:  # every member must be one the stacked engine trains
            from nasrun.methods.stacking import check_stackable

            check_stackable(typed, f"the job {' '.join(job) or 'of the sweep'}")
    interpolated = [t for t in tokens if "${" in t]
    if interpolated:
        check_output_dirs(interpolated, lambda key, value: resolved_dir(command, listed[0], key, value))


def check_population(command: str, tokens: list[str], multirun: bool) -> None:
    """``hydra/launcher=population`` runs the searches of a sweep, in one process: say so where it cannot."""
    from nasrun.parallel.ranks import world_size

    launcher = [t.split("=", 1)[1] for t in tokens if t.lstrip("+").split("=", 1)[0] == "hydra/launcher"]
    if "population" not in launcher:
        for key in ("max_members", "engine"):
            if any(t.lstrip("+").startswith(f"hydra.launcher.{key}=") for t in tokens):
                raise ConfigError(f"hydra.launcher.{key} is a key of hydra/launcher=population only; "
                                  "choose that launcher too or leave the key out")
        return
    if command not in ("search", "pipeline"):
        raise ConfigError(f"hydra/launcher=population is not allowed for nasrun {command}: it runs the searches of "
                          "nasrun search and nasrun pipeline sweeps")
    if not multirun:
        raise ConfigError("hydra/launcher=population needs a sweep: add -m (e.g. nasrun search -m seed=0,1,2 "
                          "hydra/launcher=population)")
    if world_size() > 1:
        raise ConfigError(f"hydra/launcher=population is not allowed under torchrun (world size {world_size()}): "
                          "its members share one process; run the sweep without torchrun")
    for token in tokens:
        key, _, value = token.lstrip("+").partition("=")
        if key == "hydra.launcher.max_members" and not (value.isdigit() and 1 <= int(value) <= 1024):
            raise ConfigError(f"hydra.launcher.max_members={value} is not allowed: an integer from 1 to 1024 "
                              "(the most members in one population)")
        if key == "hydra.launcher.engine" and value not in ENGINES:
            raise ConfigError(f"hydra.launcher.engine={value} is not allowed: turns (the members take turns) or "
                              "stacked (one network with a group per member)")


def resolved_dir(command: str, job: list[str], key: str, value: str) -> str:
    """The folder an output-dir value with an interpolation names, resolved as Hydra will resolve it."""
    from omegaconf import OmegaConf

    from nasrun.config.checks import shorten
    from nasrun.config.compose import hydra_compose_raw
    from nasrun.config.compose_errors import one_line
    from nasrun.config.overrides import quote_genotype

    try:
        return str(OmegaConf.select(hydra_compose_raw(command, quote_genotype(job), hydra=True), key))
    except NasrunError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unset variable, a loop, an unknown resolver
        reason = one_line(exc).split(" raised while resolving interpolation: ")[-1]
        raise ConfigError(f"{key}={shorten(value)} cannot be resolved: {reason}") from None


def check_job(command: str, typed, job: Sequence[str] = ()) -> None:
    """The checks one command makes of one typed job (``job``: its overrides) before it runs."""
    check_benchmark_file(typed.benchmark)
    if command == "search":
        from nasrun.parallel.search_ranks import check_search_ranks

        check_search_ranks(typed)
    elif command == "retrain":
        from nasrun.train.inputs import layers_named
        from nasrun.train.retrain import prepare_retrain

        prepare_retrain(typed, layers_given=layers_named(job))
    elif command == "pipeline":
        from nasrun.run.pipeline import check_pipeline

        check_pipeline(typed)


def check_benchmark_file(conf) -> None:
    """A benchmark table named by the config must exist before any work starts (it is loaded when the run starts)."""
    path = getattr(conf, "path", None)
    try:
        found = bool(path) and Path(path).expanduser().exists()
    except OSError as exc:  # a name too long, a loop of links
        raise ConfigError(f"benchmark.path={path!r} cannot be read: {exc.strerror or exc}") from None
    if path and not found:
        from nasrun.genotype.benchmarks import missing_file_message

        raise ConfigError(missing_file_message(Path(path)))
    if path:
        from nasrun.genotype.benchmarks import check_table_path

        check_table_path(Path(path).expanduser(), getattr(conf, "kind", None) or "auto")
