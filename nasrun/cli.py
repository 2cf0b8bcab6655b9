"""`nasrun <command>`: dispatch to the Hydra application of each command; nothing else.

Overrides are composed and validated before a Hydra application starts, so a bad group option,
unknown key or out-of-range value ends the command with exit status 2 and one line.
"""

from __future__ import annotations

import re
import secrets
import sys
from importlib import resources
from pathlib import Path

import hydra
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from nasrun.config import NasrunConf, one_line, register_schemas, to_typed
from nasrun.errors import NasrunError

CONFIG_MODULE = "nasrun.conf"
COMMANDS = {
    "search": "search a genotype (a method on a space and a dataset)",
    "retrain": "train a genotype from scratch and report its test accuracy",
    "show": "print a genotype with its parameter count and multiply-adds",
    "pipeline": "search, then retrain the genotype found, in one job folder",
    "report": "summarise run or sweep folders: mean ± std per group of overrides, plots",
}
GROUPS = ("space", "dataset", "method", "recipe", "experiment")
# Hydra flags that need no composition check (help, config printing, completion).
_NO_CHECK_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
                   "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--resolve", "--version"}


def genotype_label(spec: str) -> str:
    """A short, file-system-safe name for a genotype argument (used in run-folder names)."""
    path = Path(str(spec))
    if path.name == "genotype.json":
        path = path.parent
    name = path.stem if path.suffix == ".json" else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:60] or "genotype"


def job_label(override_dirname: str) -> str:
    """A sweep job's folder name from its overrides: `method.eta=0.1,seed=0` -> `eta-0.1_seed-0`."""
    parts = []
    for item in override_dirname.split(","):
        if not item:
            continue
        key, _, value = item.partition("=")
        key = key.lstrip("+~").split(".")[-1] if key.startswith("method.") else key.lstrip("+~")
        if "/" in value or value.endswith(".json"):
            value = genotype_label(value)  # a path: its last part
        parts.append(f"{key}-{value}" if value else key)
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", "_".join(parts))[:120] or "default"


def _register() -> None:
    register_schemas()
    if not OmegaConf.has_resolver("nasrun_label"):
        OmegaConf.register_new_resolver("nasrun_label", genotype_label)
    if not OmegaConf.has_resolver("nasrun_job"):
        OmegaConf.register_new_resolver("nasrun_job", job_label)
    if not OmegaConf.has_resolver("nasrun_uid"):
        # a short random id per composed config (cached, so one sweep gets one id, copied to its jobs)
        OmegaConf.register_new_resolver("nasrun_uid", lambda: secrets.token_hex(3), use_cache=True)


_register()


def fail(command: str, message: str) -> None:
    print(f"nasrun {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _typed_or_exit(cfg: DictConfig, command: str) -> NasrunConf:
    try:
        return to_typed(cfg)
    except NasrunError as exc:
        fail(command, str(exc))
        raise  # unreachable


def _run_task(cfg: DictConfig, command: str) -> dict:
    """One job. In a sweep a failure is recorded in the job's result.json and the sweep goes on;
    the dispatcher exits non-zero at the end and lists the failed jobs."""
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    out_dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return _run_command(_typed_or_exit(cfg, command), command, out_dir, in_sweep=False)
    try:
        return _run_command(to_typed(cfg), command, out_dir, in_sweep=True)
    except Exception as exc:
        import logging

        from nasrun.pipeline import record_failure

        try:
            config = OmegaConf.to_container(cfg, resolve=True)
        except Exception:
            config = None
        result = record_failure(out_dir, command, exc, config)
        logging.getLogger("nasrun.cli").error("job failed: %s (%s)", result.get("reason"), out_dir)
        print(f"nasrun {command}: job failed: {result.get('reason')}  ({out_dir})", file=sys.stderr)
        return result


def _run_command(typed: NasrunConf, command: str, out_dir: str, in_sweep: bool) -> dict:
    try:
        if command == "search":
            from nasrun.search import run_search

            result = run_search(typed, out_dir)
            print(f"search run folder: {out_dir}")
            print(f"genotype: {Path(out_dir) / 'genotype.json'}  (search-val accuracy "
                  f"{_fmt(result.get('final', {}).get('val_acc'))})")
        elif command == "pipeline":
            from nasrun.pipeline import run_pipeline

            result = run_pipeline(typed, out_dir)
            print(f"pipeline job folder: {out_dir}")
            print(f"search-val accuracy {_fmt(result.get('search_val_acc'))}, test accuracy "
                  f"{_fmt(result.get('test_acc'))}  ({(result.get('params') or 0) / 1e6:.2f}M params)")
        else:
            from nasrun.retrain import run_retrain

            result = run_retrain(typed, out_dir)
            print(f"retrain run folder: {out_dir}")
            print(f"test accuracy: {_fmt(result.get('test_acc'))}  ({result.get('params', 0) / 1e6:.2f}M params, "
                  f"{result.get('macs', 0) / 1e6:.1f}M multiply-adds)")
        return result
    except NasrunError as exc:
        if in_sweep:
            raise  # recorded by _run_task
        fail(command, str(exc))
        raise  # unreachable


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


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a primary config with overrides (no run folder, no Hydra runtime)."""
    with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
        return compose(config_name=config_name, overrides=overrides)


def _override_tokens(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]


def check_overrides(config_name: str, args: list[str]) -> None:
    """Compose and validate every job a command line would run; exit 2 with one line on the first problem."""
    tokens = _override_tokens(args)
    multirun = "-m" in args or "--multirun" in args
    try:
        if multirun:
            from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

            parsed = OverridesParser.create().parse_overrides(tokens)
            jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        else:
            jobs = [tokens]
        for job in jobs:
            typed = to_typed(compose_config(config_name, list(job)))
            if config_name == "retrain":
                from nasrun.retrain import prepare_retrain

                prepare_retrain(typed)
            elif config_name == "pipeline":
                from nasrun.pipeline import check_pipeline

                check_pipeline(typed)
    except NasrunError as exc:
        fail(config_name, str(exc))
    except Exception as exc:
        message = one_line(exc)
        if "hydra/launcher" in message:
            message += " (the joblib and submitit launchers come with: pip install 'nasrun[sweep]')"
        fail(config_name, message)


def _name_jobs_by_swept_keys(command: str, args: list[str]) -> list[str]:
    """Leave the keys every job shares out of the sweep's job-folder names (multirun.yaml records them)."""
    key = "hydra.job.config.override_dirname.exclude_keys"
    if any(a.startswith(key + "=") for a in args):
        return args
    try:
        parsed = OverridesParser.create().parse_overrides(_override_tokens(args))
        with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
            base = compose(config_name=command, return_hydra_config=True)
        excluded = list(base.hydra.job.config.override_dirname.exclude_keys)
    except Exception:
        return args
    fixed = [o.key_or_group for o in parsed
             if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    if not fixed:
        return args
    excluded += [k for k in fixed if k not in excluded]
    first = args.index(_override_tokens(args)[0])  # beside the other overrides, for Hydra's argument parser
    return [*args[:first], f"{key}=[{','.join(excluded)}]", *args[first:]]


def _finish_sweep(command: str) -> None:
    """After a multirun: name the sweep folder, and exit 1 listing the jobs that did not complete."""
    from nasrun.pipeline import SweepOutcome

    if SweepOutcome.last is None:
        return
    sweep_dir, jobs, failed = SweepOutcome.last
    print(f"sweep folder: {sweep_dir}  ({jobs} jobs; summarise with: nasrun report {sweep_dir})")
    if failed:
        print(f"nasrun {command}: {len(failed)} of {jobs} jobs did not complete:", file=sys.stderr)
        for folder, reason in failed:
            print(f"  {folder}: {reason}", file=sys.stderr)
        raise SystemExit(1)


def show(args: list[str]) -> None:
    """`nasrun show genotype=X [recipe=...] [dataset=...]`: the genotype and its network's size."""
    if any(a in ("-h", "--help") for a in args):
        print("usage: nasrun show genotype=<name | genotype.json | search run folder> [recipe=cifar|quick] "
              "[dataset=NAME] [recipe.C=..] [recipe.layers=..] [--plot[=FILE.png]]\n\n"
              "Prints the genotype, and the parameter count and multiply-adds of the network it gives at the\n"
              "recipe's size (the auxiliary head is counted separately). --plot draws the normal and reduction\n"
              "cells (default file: cells_<genotype>.png; needs matplotlib). Published genotypes: "
              + ", ".join(_published()))
        return
    plot_to = None
    for a in [a for a in args if a == "--plot" or a.startswith("--plot=")]:
        args = [b for b in args if b != a]
        plot_to = a.partition("=")[2]
    unknown = [a for a in args if a.startswith("-") or "=" not in a]
    if unknown:
        fail("show", f"unexpected argument {unknown[0]!r}; arguments are overrides such as genotype=DARTS_V2")
    try:
        typed = to_typed(compose_config("retrain", args))
        from nasrun.retrain import build_network, describe_network, resolve_inputs

        genotype, run_folder, dataset = resolve_inputs(typed)
        model = build_network(genotype, typed, dataset)
        info = describe_network(model, dataset)
    except NasrunError as exc:
        fail("show", str(exc))
    except Exception as exc:
        fail("show", one_line(exc))
    r = typed.recipe
    print(f"genotype: {typed.genotype}" + (f"  (search run {run_folder})" if run_folder else ""))
    print(genotype)
    print(f"network: recipe={r.name}, C={r.C}, {r.layers} cells, {dataset.name} "
          f"({dataset.in_channels}x{dataset.image_size}x{dataset.image_size}, {dataset.num_classes} classes)")
    aux = info["params_with_auxiliary"] - info["params"]
    print(f"parameters: {info['params'] / 1e6:.2f}M ({info['params']:,}) without the auxiliary head"
          + (f"; auxiliary head {aux:,} more" if aux else ""))
    print(f"multiply-adds: {info['macs'] / 1e6:.1f}M per image (inference, auxiliary head not run)")
    if plot_to is not None:
        path = Path(plot_to or f"cells_{genotype_label(typed.genotype)}.png")
        try:
            from nasrun.plot import plot_genotype

            plot_genotype(genotype, path, title=genotype_label(typed.genotype))
        except NasrunError as exc:
            fail("show", str(exc))
        print(f"cell diagrams: {path}")


def _published() -> list[str]:
    from nasrun.genotype import PUBLISHED

    return sorted(PUBLISHED)


def _group_options(group: str) -> list[str]:
    folder = resources.files(CONFIG_MODULE) / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def usage() -> str:
    lines = ["usage: nasrun <command> [overrides...] [hydra flags]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    lines += ["", "config groups (pick one with group=option):"]
    lines += [f"  {g:<11} {', '.join(_group_options(g))}" for g in GROUPS]
    lines += ["", "examples:",
              "  nasrun search experiment=quickstart",
              "  nasrun search method=darts_2nd dataset=digits seed=3 search.epochs=4 supernet.C=8",
              "  nasrun retrain genotype=DARTS_V2 dataset.root=/data/cifar",
              "  nasrun search -m seed=0,1,2",
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
        if any(a in ("-h", "--help") for a in args):
            print(usage())
            return
        print(usage(), file=sys.stderr)
        raise SystemExit(2)
    if command not in COMMANDS:
        fail(command, f"unknown command {command!r}; commands are {', '.join(COMMANDS)}")
    args.remove(command)
    if command == "show":
        show(args)
        return
    if command == "report":
        from nasrun.report import main as report_main

        raise SystemExit(report_main(args))
    runs_jobs = not any(a.split("=")[0] in _NO_CHECK_FLAGS for a in args)
    if runs_jobs:
        check_overrides(command, args)
    multirun = "-m" in args or "--multirun" in args
    if multirun:
        args = _name_jobs_by_swept_keys(command, args)
    sys.argv = [f"nasrun {command}"] + args
    app = {"search": search_app, "retrain": retrain_app, "pipeline": pipeline_app}[command]
    app()
    if multirun and runs_jobs:
        _finish_sweep(command)


if __name__ == "__main__":
    main()
