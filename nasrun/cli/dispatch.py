"""`nasrun <command>`: check the command line, then hand it to the command's Hydra application.

Every job a command line asks for is composed and validated before a Hydra application starts
(:mod:`nasrun.cli.preflight`), so a bad option, key or value ends the command with exit status 2 and
one line. A run that fails prints one line (the reason and where it is recorded) and exits 1; an
interrupted one exits with the signal's conventional status and one line, from the first line on:
SIGTERM and SIGINT are caught before anything heavy is imported (:func:`nasrun.run.signals.exits_on_signal`). ``HYDRA_FULL_ERROR=1`` shows the traceback
instead. Nothing imported here imports torch: help and a mistyped key answer at once; the rest is
imported when it is needed, so the signal handlers are in place within a few hundredths of a second.
"""

from __future__ import annotations

import sys

from nasrun.run.signals import Interrupted, exits_on_signal

COMMANDS = {
    "search": "search a genotype (a method on a space and a dataset)",
    "retrain": "train a genotype from scratch and report its test accuracy",
    "show": "print a genotype with its parameter count and multiply-adds",
    "pipeline": "search, then retrain the genotype found, in one job folder",
    "select": "select a finished search's genotype again (selection=perturbation: DARTS-PT), beside its own",
    "report": "summarise run or sweep folders: mean ± std per group of overrides, plots",
}
# Hydra flags that need no composition check (help, information, completion, a config of the user's own).
_NO_CHECK_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc",
                   "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--version"}
# Hydra flags that print the config instead of running it: the command line is checked, no job runs.
_PRINT_FLAGS = {"--cfg", "-c", "--resolve", "--package", "-p"}
_LAUNCHER_HINT = " (the joblib and submitit launchers come with: pip install 'nasrun[sweep]')"
EXAMPLES = [
    "nasrun search experiment=quickstart",
    "nasrun search method=darts_2nd dataset=digits seed=3 search.epochs=4 supernet.C=8",
    "nasrun search method=amended estimator.eta=0.5",
    "nasrun retrain genotype=DARTS_V2 dataset=cifar10 dataset.root=/data/cifar",
    "nasrun search -m seed=0,1,2 estimator.eta=0.1,0.5 method=amended",
    "nasrun pipeline -m seed=0,1 method=darts,darts_2nd experiment=quickstart",
    "nasrun report multirun/pipeline/<date>/<time>_<id> --plot",
    "nasrun show genotype=DARTS_V2 --plot",
    "nasrun select genotype=outputs/search/<date>/<run> selection=perturbation",
]


def fail(command: str, message: str, status: int = 2) -> None:
    print(f"nasrun {command}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def usage() -> str:
    from nasrun.config.compose_errors import group_options, groups

    lines = ["usage: nasrun <command> [overrides...] [hydra flags]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    lines += ["", "config groups (pick one with group=option):"]
    lines += [f"  {g:<13} {', '.join(group_options(g))}" for g in groups()]
    lines += ["", "examples:", *(f"  {e}" for e in EXAMPLES), "",
              "`nasrun <command> --help` lists that command's options; `--cfg job` prints its composed config."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``nasrun <command> args``: exit 0 on success, 2 on bad input, 1 on a failed run, 130/143 when interrupted."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), "")
    with exits_on_signal(command, _is_rank0):  # first: a signal from now on is one line and 143, never silent
        try:
            _main(list(args))
        except BrokenPipeError:  # `nasrun --help | head`: the reader left; say nothing more
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from None
        except (Interrupted, KeyboardInterrupt) as exc:
            _interrupted(command, exc)


def _interrupted(command: str, exc: BaseException) -> None:
    """An Interrupted that ended a run outside its own handling (raised by a hook, or a Ctrl-C before the
    handlers were in place): one line, 130/143, and the job folder Hydra had made is marked."""
    import os

    from nasrun.run.signals import exit_status, hold, interruption_line, job_folder_of, signal_of

    hold()
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    signum = signal_of(exc)
    print(interruption_line(command, signum, job_folder_of(exc), _is_rank0()), file=sys.stderr)
    raise SystemExit(exit_status(signum)) from None


def _is_rank0() -> bool:
    from nasrun.parallel import ranks

    return ranks.rank() == 0


def _main(args: list[str]) -> None:
    command = next((a for a in args if not a.startswith("-")), None)
    if command is None:
        wants_help = any(a in ("-h", "--help") for a in args)
        print(usage(), file=sys.stdout if wants_help else sys.stderr)
        if not wants_help:
            raise SystemExit(2)
        return
    if command not in COMMANDS:
        fail(command, f"unknown command {command!r}; commands are {', '.join(COMMANDS)}")
    args.remove(command)
    if command == "report":
        from nasrun.report.summary import main as report_main

        raise SystemExit(report_main(args))
    from nasrun.errors import NasrunError

    try:
        if command == "show":
            from nasrun.cli.show import show

            show(args)
            return
        if command == "select":
            from nasrun.cli.select import select

            select(args)
            return
        _dispatch(command, args)
    except NasrunError as exc:
        from nasrun.cli.apps import full_error

        if full_error():
            raise
        message = str(exc)
        fail(command, message + (_LAUNCHER_HINT if "hydra/launcher" in message else ""))


def _dispatch(command: str, args: list[str]) -> None:
    """Check every job of the command line, then run the command's Hydra application over it."""
    from nasrun.config.compose import register
    from nasrun.config.overrides import hydra_arguments, is_multirun, name_jobs_by_swept_keys, quote_genotype
    from nasrun.parallel import ranks

    multirun = is_multirun(args)
    if ranks.is_distributed():
        from nasrun.parallel.launch import check_torchrun

        check_torchrun(command, multirun)
    register()
    args = quote_genotype(args)
    if any(a in ("-h", "--help") for a in args):
        from nasrun.cli.help import render
        from nasrun.config.overrides import override_tokens

        print(render(command, override_tokens(args)))
        return
    checked = not any(a.split("=")[0] in _NO_CHECK_FLAGS for a in args)
    runs_jobs = checked and not any(a.split("=")[0] in _PRINT_FLAGS for a in args)
    args = hydra_arguments(args)
    if checked:
        _preflight(command, args)
    if runs_jobs and ranks.rank() != 0:
        from nasrun.parallel.launch import follow_rank0

        args = follow_rank0(args)
    if multirun:
        args = name_jobs_by_swept_keys(args)
    from nasrun.cli.apps import APPS

    sys.argv = [f"nasrun {command}"] + args
    APPS[command]()
    if multirun and runs_jobs:
        from nasrun.run.sweeps import finish_sweep

        finish_sweep(command)


def _preflight(command: str, args: list[str]) -> None:
    from nasrun.cli.preflight import check_command_line
    from nasrun.parallel.launch import check_multi_task_jobs

    check_command_line(command, args)
    check_multi_task_jobs(command, args)
