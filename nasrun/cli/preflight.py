"""Every job a command line asks for, composed and validated before a Hydra application starts.

A bad value in the fifth job of a sweep fails in a second, not after four searches: each job is
composed, typed (every schema check), and given the checks of its command (benchmark file, what
torchrun supports, the genotype a retrain reads, a pipeline's two stages).
"""

from __future__ import annotations

from pathlib import Path

from nasrun.config.compose import compose, to_typed
from nasrun.config.overrides import check_output_dirs, is_multirun, jobs, override_tokens
from nasrun.errors import ConfigError


def check_command_line(command: str, args: list[str]) -> None:
    """Compose and validate every job of ``nasrun <command> args``; raise NasrunError on the first problem."""
    tokens = override_tokens(args)
    check_output_dirs(tokens)
    for job in jobs(tokens, is_multirun(args)):
        check_job(command, to_typed(compose(command, job)))


def check_job(command: str, typed) -> None:
    """The checks one command makes of one typed job before it runs."""
    check_benchmark_file(typed.benchmark)
    if command == "search":
        from nasrun.parallel.search_ranks import check_search_ranks

        check_search_ranks(typed)
    elif command == "retrain":
        from nasrun.train.retrain import prepare_retrain

        prepare_retrain(typed)
    elif command == "pipeline":
        from nasrun.run.pipeline import check_pipeline

        check_pipeline(typed)


def check_benchmark_file(conf) -> None:
    """A benchmark table named by the config must exist before any work starts (it is loaded when the run starts)."""
    path = getattr(conf, "path", None)
    if path and not Path(path).expanduser().exists():
        from nasrun.genotype.benchmarks import missing_file_message

        raise ConfigError(missing_file_message(Path(path)))
