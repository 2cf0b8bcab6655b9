"""`nasrun <command>`: check the command line, then hand it to the command's Hydra application.

Every job a command line asks for is composed and validated before a Hydra application starts, so
a bad option, key or value ends the command with exit status 2 and one line. A run that fails
prints one line (the reason and where it is recorded) and exits 1; an interrupted one exits with
the signal's conventional status. ``HYDRA_FULL_ERROR=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from nasrun.parallel import distributed
from nasrun.config.compose_errors import group_options, groups
from nasrun.config.schema import compose, register, to_typed
from nasrun.errors import ConfigError, NasrunError
from nasrun.config.overrides import check_output_dirs, jobs, override_tokens, quote_genotype, swept_free_keys

COMMANDS = {
    "search": "search a genotype (a method on a space and a dataset)",
    "retrain": "train a genotype from scratch and report its test accuracy",
    "show": "print a genotype with its parameter count and multiply-adds",
    "pipeline": "search, then retrain the genotype found, in one job folder",
    "report": "summarise run or sweep folders: mean ± std per group of overrides, plots",
}
# Hydra flags that need no composition check (help, config printing, completion).
_NO_CHECK_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
                   "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--resolve", "--version"}


def fail(command: str, message: str, status: int = 2) -> None:
    print(f"nasrun {command}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _run_task(cfg: DictConfig, command: str) -> dict:
    """One job: run it and print its outcome; a failure is recorded in the job's result.json.

    In a sweep the other jobs go on and the dispatcher lists the failed ones at the end.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from nasrun.run.folder import Interrupted, exit_status

    hydra_cfg = HydraConfig.get()
    out_dir = hydra_cfg.runtime.output_dir
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    if distributed.join_submitit_job():  # Hydra gave every task of the job the same folder already
        if distributed.rank() != 0:
            _quiet_follower()
    elif distributed.is_distributed() and distributed.rank() == 0:
        distributed.job().publish_run_dir(out_dir)  # the other ranks wait for it before they start Hydra
    try:
        return _run_command(to_typed(cfg), command, out_dir)
    except Interrupted as exc:
        print(f"nasrun {command}: interrupted; the checkpoint in {out_dir} is kept: rerun the same command to "
              "resume", file=sys.stderr)
        raise SystemExit(exit_status(exc.signum)) from None
    except KeyboardInterrupt:
        print(f"nasrun {command}: interrupted; rerun the same command to resume ({out_dir})", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:
        if _full_error():
            raise
        if distributed.rank() != 0:
            return _rank_failed(command, exc, in_sweep)
        from nasrun.run.sweeps import record_failure

        result = record_failure(out_dir, command, exc, _plain(cfg))
        logging.getLogger("nasrun.cli.dispatch").error("job failed: %s (%s)", result.get("reason"), out_dir)
        status = 2 if isinstance(exc, NasrunError) else 1
        where = f"  (recorded in {Path(out_dir) / 'result.json'})" if status == 1 else ""
        print(f"nasrun {command}: {'job ' if in_sweep else ''}failed: {result.get('reason')}{where}",
              file=sys.stderr)
        if in_sweep:
            return result
        raise SystemExit(status) from None


def _quiet_follower() -> None:
    """A submitit task other than rank 0 logs as a torchrun follower does: warnings and errors only, to its own
    submitit log and not to the run's log file, which Hydra opened in every task of the job."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
    fmt = logging.Formatter(f"[rank {distributed.rank()}][%(name)s][%(levelname)s] - %(message)s")
    for handler in root.handlers:
        handler.setLevel(logging.WARNING)
        handler.setFormatter(fmt)
    root.setLevel(logging.WARNING)


def _rank_failed(command: str, exc: Exception, in_sweep: bool) -> dict:
    """A rank other than 0 failed, or stopped after another rank did: one line (rank 0 records the job).

    In a sweep (a submitit job of several tasks) the task returns, as rank 0's does, so the launcher
    collects every task's outcome instead of finding a task that ended without one.
    """
    from nasrun.run.lifecycle import reason_of

    what = "stopped" if isinstance(exc, distributed.RankFailed) else "failed"
    print(f"nasrun {command}: rank {distributed.rank()} {what}: {reason_of(exc)}", file=sys.stderr)
    if in_sweep:
        return {"status": "failed", "reason": reason_of(exc), "rank": distributed.rank()}
    raise SystemExit(2 if isinstance(exc, NasrunError) else 1) from None


def _plain(cfg: DictConfig) -> dict | None:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - the record is still written, without the config
        return None


def _run_command(typed, command: str, out_dir: str) -> dict:
    if command == "search":
        from nasrun.search.loop import run_search

        result = run_search(typed, out_dir)
        if distributed.rank() == 0:
            print(f"search run folder: {out_dir}")
            print(f"genotype: {Path(out_dir) / 'genotype.json'}  (search-val accuracy "
                  f"{_fmt(result.get('final', {}).get('val_acc'))})")
    elif command == "pipeline":
        from nasrun.run.pipeline import run_pipeline

        result = run_pipeline(typed, out_dir)
        print(f"pipeline job folder: {out_dir}")
        print(f"search-val accuracy {_fmt(result.get('search_val_acc'))}, test accuracy "
              f"{_fmt(result.get('test_acc'))}  ({(result.get('params') or 0) / 1e6:.2f}M params)")
    else:
        from nasrun.train.retrain import run_retrain

        result = run_retrain(typed, out_dir)
        if distributed.rank() == 0:
            print(f"retrain run folder: {out_dir}")
            print(f"test accuracy: {_fmt(result.get('test_acc'))}  ({result.get('params', 0) / 1e6:.2f}M params, "
                  f"{result.get('macs', 0) / 1e6:.1f}M multiply-adds)")
    return result


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@hydra.main(version_base="1.3", config_path="pkg://nasrun.conf", config_name="search")
def search_app(cfg: DictConfig) -> dict:
    return _run_task(cfg, "search")


@hydra.main(version_base="1.3", config_path="pkg://nasrun.conf", config_name="retrain")
def retrain_app(cfg: DictConfig) -> dict:
    return _run_task(cfg, "retrain")


@hydra.main(version_base="1.3", config_path="pkg://nasrun.conf", config_name="pipeline")
def pipeline_app(cfg: DictConfig) -> dict:
    return _run_task(cfg, "pipeline")


def check_overrides(command: str, args: list[str]) -> None:
    """Compose and validate every job a command line would run; exit 2 with one line on the first problem."""
    tokens = override_tokens(args)
    multirun = "-m" in args or "--multirun" in args
    try:
        check_output_dirs(tokens)
        for job in jobs(tokens, multirun):
            typed = to_typed(compose(command, job))
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
    except NasrunError as exc:
        message = str(exc)
        if "hydra/launcher" in message:
            message += " (the joblib and submitit launchers come with: pip install 'nasrun[sweep]')"
        fail(command, message)


def check_benchmark_file(conf) -> None:
    """A benchmark table named by the config must exist before any work starts (it is loaded when the run starts)."""
    path = getattr(conf, "path", None)
    if path and not Path(path).expanduser().exists():
        from nasrun.genotype.benchmarks import missing_file_message

        raise ConfigError(missing_file_message(Path(path)))


def _name_jobs_by_swept_keys(args: list[str]) -> list[str]:
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


def _finish_sweep(command: str) -> None:
    """After a multirun: name the sweep folder, and exit 1 listing the jobs that did not complete."""
    from nasrun.run.sweeps import SweepOutcome

    if SweepOutcome.last is None:
        return
    sweep_dir, count, failed = SweepOutcome.last
    print(f"sweep folder: {sweep_dir}  ({count} jobs; summarise with: nasrun report {sweep_dir})")
    if failed:
        print(f"nasrun {command}: {len(failed)} of {count} jobs did not complete:", file=sys.stderr)
        for folder, reason in failed:
            print(f"  {folder}: {reason}", file=sys.stderr)
        raise SystemExit(1)


def usage() -> str:
    lines = ["usage: nasrun <command> [overrides...] [hydra flags]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    lines += ["", "config groups (pick one with group=option):"]
    lines += [f"  {g:<13} {', '.join(group_options(g))}" for g in groups()]
    lines += ["", "examples:",
              "  nasrun search experiment=quickstart",
              "  nasrun search method=darts_2nd dataset=digits seed=3 search.epochs=4 supernet.C=8",
              "  nasrun search method=amended estimator.eta=0.5",
              "  nasrun retrain genotype=DARTS_V2 dataset.root=/data/cifar",
              "  nasrun search -m seed=0,1,2 estimator.eta=0.1,0.5 method=amended",
              "  nasrun pipeline -m seed=0,1 method=darts,darts_2nd experiment=quickstart",
              "  nasrun report multirun/pipeline/<date>/<time>_<id> --plot",
              "  nasrun show genotype=DARTS_V2 --plot",
              "",
              "`nasrun <command> --help` lists that command's options; `--cfg job` prints its composed config."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), None)
    if command is None:
        print(usage(), file=sys.stdout if any(a in ("-h", "--help") for a in args) else sys.stderr)
        if not any(a in ("-h", "--help") for a in args):
            raise SystemExit(2)
        return
    if command not in COMMANDS:
        fail(command, f"unknown command {command!r}; commands are {', '.join(COMMANDS)}")
    args.remove(command)
    if command == "report":
        from nasrun.report.summary import main as report_main

        raise SystemExit(report_main(args))
    if command == "show":
        _show(args)
        return
    _dispatch(command, args)


def _show(args: list[str]) -> None:
    from nasrun.cli.show import show

    try:
        show(args)
    except NasrunError as exc:
        if _full_error():
            raise
        fail("show", str(exc))


def _dispatch(command: str, args: list[str]) -> None:
    if distributed.is_distributed():
        _check_torchrun(command, "-m" in args or "--multirun" in args)
    register()
    args = quote_genotype(args)
    if any(a in ("-h", "--help") for a in args):
        from nasrun.cli.help import render

        print(render(command, override_tokens(args)))
        return
    runs_jobs = not any(a.split("=")[0] in _NO_CHECK_FLAGS for a in args)
    if runs_jobs:
        check_overrides(command, args)
        _check_multi_task_jobs(command, args)
        if distributed.rank() != 0:
            args = _follow_rank0(args)
    multirun = "-m" in args or "--multirun" in args
    if multirun:
        args = _name_jobs_by_swept_keys(args)
    sys.argv = [f"nasrun {command}"] + args
    app = {"search": search_app, "retrain": retrain_app, "pipeline": pipeline_app}[command]
    app()
    if multirun and runs_jobs:
        _finish_sweep(command)


def _check_torchrun(command: str, multirun: bool) -> None:
    """Under torchrun a single search or retraining runs: pipeline and sweeps exit 2."""
    if command == "pipeline":
        fail(command, distributed.PIPELINE_REFUSED)
    if multirun:
        fail(command, "-m/--multirun is not allowed under torchrun: start one torchrun per job of the sweep")


def _check_multi_task_jobs(command: str, args: list[str]) -> None:
    """A submitit job of several tasks (``hydra.launcher.nodes`` × ``tasks_per_node`` > 1) is one multi-process
    job, like torchrun's: what torchrun refuses, and a global batch the tasks cannot split evenly, exit 2 here,
    before anything is queued."""
    tokens = override_tokens(args)
    if not ("-m" in args or "--multirun" in args) or not any(
            t.startswith(("hydra/launcher=", "hydra.launcher.")) for t in tokens):
        return
    from nasrun.config.schema import _hydra_compose

    try:
        launcher = _hydra_compose(command, jobs(tokens, True)[0], hydra=True).hydra.launcher
    except Exception:  # noqa: BLE001 - check_overrides has reported any composition problem
        return
    world = int(launcher.get("nodes") or 1) * int(launcher.get("tasks_per_node") or 1)
    if world <= 1:
        return
    _check_torchrun(command, multirun=False)
    key = "search.batch_size" if command == "search" else "recipe.batch_size"
    where = f"in a job of {world} tasks (hydra.launcher.nodes x tasks_per_node)"
    try:
        for job in jobs(tokens, True):
            typed = to_typed(compose(command, job))
            batch = typed.search.batch_size if command == "search" else typed.recipe.batch_size
            distributed.check_config(batch, typed.device, key, world, where)
    except NasrunError as exc:
        fail(command, str(exc))


def _follow_rank0(args: list[str]) -> list[str]:
    """A rank other than 0 runs in rank 0's run folder (Hydra names it after the clock) and writes none of its files.

    Its log shows warnings and errors only, on stderr; rank 0 writes .hydra/ and retrain.log.
    """
    run_dir = distributed.job().run_dir()
    quoted = "'" + run_dir.replace("'", "\\'").replace("${", "\\${") + "'"
    log_format = f"'[rank {distributed.rank()}][%(name)s][%(levelname)s] - %(message)s'"
    return [*args, f"hydra.run.dir={quoted}", "hydra.output_subdir=null", "hydra/job_logging=stdout",
            "hydra.job_logging.root.level=WARNING", "hydra.job_logging.handlers.console.stream=ext://sys.stderr",
            f"hydra.job_logging.formatters.simple.format={log_format}"]


if __name__ == "__main__":
    main()
