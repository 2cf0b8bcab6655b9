"""``hydra/launcher=population``: a ``-m`` sweep's searches as populations, one process for all.

The sweep's jobs are grouped by their configs without the member keys (:mod:`nasrun.config.members`);
each group runs as one population (:mod:`nasrun.run.population`). Every job gets the folder Hydra
gives it in any sweep, in three passes:

1. Hydra makes each member's job folder and writes its ``.hydra/`` (the job's own code is not run);
2. the population searches into the members' folders (a pipeline's into ``<job>/search``);
3. each job runs as Hydra runs it with the basic launcher: a completed search is read back, a
   pipeline retrains its genotype, a member that failed in the population is reported as failed.

So every member folder holds a solo run's files, and ``nasrun report``, ``retrain genotype=<member>``
and resume read it as one. A signal during the population records every member as interrupted and
ends the command with 143 (SIGTERM) or 130 (SIGINT); rerunning the command resumes each member.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class PopulationLauncherConf:
    """``hydra.launcher.max_members``: the most members in one population (memory: each has its supernet);
    ``hydra.launcher.engine``: ``turns`` (the members take turns, one epoch each; bit for bit their solo runs)
    or ``stacked`` (one network with a group per member, one forward and backward per step for all; their solo
    runs up to rounding; first-order DARTS on the DARTS ops, ``nasrun.run.stacked``)."""

    _target_: str = "hydra_plugins.nasrun_population_launcher.population_launcher.PopulationLauncher"
    max_members: int = 8
    engine: str = "turns"


class PopulationLauncherBase(Launcher):
    """Runs a sweep's jobs as populations of members that differ only in member keys.

    Hydra instantiates launchers from its ``hydra_plugins`` package only: the class it names is the
    subclass there.
    """

    def __init__(self, max_members: int = 8, engine: str = "turns") -> None:
        from nasrun.config.checks import one_of, positive_int
        from nasrun.config.members import ENGINES

        positive_int("hydra.launcher.max_members", max_members, hi=1024)
        one_of("hydra.launcher.engine", engine, ENGINES)
        self.max_members, self.engine = int(max_members), str(engine)
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from nasrun.config.members import group_jobs

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        command = str(self.config.hydra.job.name)
        configs = [self._job_config(initial_job_idx + i, o) for i, o in enumerate(job_overrides)]
        made = [self._run(config, _made_folder) for config in configs]  # pass 1: the folders and .hydra/
        plain = [_plain(ret.cfg) for ret in made]
        groups = group_jobs(plain, command, self.max_members)
        log.info("Launching %d jobs as %d population(s)", len(configs), len(groups))
        runs: list[Optional[JobReturn]] = [None] * len(configs)
        for group in groups:
            for i in group:
                log.info("\t#%d : %s", initial_job_idx + i, " ".join(filter_overrides(job_overrides[i])))
            configure_log(configs[group[0]].hydra.job_logging, self.config.hydra.verbose)  # a job's console format
            outcomes = _search_population(command, [made[i] for i in group], [plain[i] for i in group], self.engine)
            for i, outcome in zip(group, outcomes):  # pass 3: each job as the basic launcher runs it
                runs[i] = self._run(configs[i], self._finish_task(command, outcome))
        return [run for run in runs if run is not None]

    def _job_config(self, idx: int, overrides: Sequence[str]) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        return config

    def _run(self, config: DictConfig, task: Callable[[DictConfig], Any]) -> JobReturn:
        assert self.hydra_context is not None and self.config is not None
        ret = run_job(hydra_context=self.hydra_context, task_function=task, config=config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def _finish_task(self, command: str, outcome) -> Callable[[DictConfig], Any]:
        if command == "search" and outcome.status == "completed":
            from nasrun.cli.apps import print_search

            return lambda cfg: print_search(_made_folder(cfg), outcome.result)
        if outcome.status != "failed":
            return self.task_function  # type: ignore[return-value]

        def failed(cfg: DictConfig) -> dict:
            from hydra.core.hydra_config import HydraConfig

            return _report_failed(cfg, command, HydraConfig.get().runtime.output_dir, outcome)

        return failed


def _made_folder(cfg: DictConfig) -> str:
    """Pass 1's job: nothing but the folder Hydra has made for it."""
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().runtime.output_dir)


def _plain(cfg: DictConfig) -> dict:
    from nasrun.config.compose import as_plain_dict, to_typed

    return as_plain_dict(to_typed(cfg))


def _search_population(command: str, made: list[JobReturn], plain: list[dict], engine: str = "turns") -> list:
    """Pass 2: the population's searches; a signal ends the command here with one line."""
    from nasrun.config.compose import to_typed
    from nasrun.config.members import member_label
    from nasrun.run.population import Member, run_population
    from nasrun.run.signals import Interrupted, exit_status, signal_of

    members = []
    for ret, config in zip(made, plain):
        folder, typed = Path(str(ret.return_value)), to_typed(ret.cfg)
        label = member_label(config, plain)
        if command == "pipeline":
            from nasrun.run.pipeline import SEARCH_DIR

            members.append(Member(replace(typed, genotype=None), folder.resolve() / SEARCH_DIR, label,
                                  [folder.resolve() / "pipeline.log"]))
        else:
            members.append(Member(typed, folder, label))
    try:
        return run_population(members, engine)
    except (Interrupted, KeyboardInterrupt) as exc:
        import signal

        signum = signal_of(exc)
        print(f"nasrun {command}: interrupted by {signal.Signals(signum).name}; each of the {len(members)} member "
              "folders records it (result.json): rerun the same command to resume", file=sys.stderr)
        raise SystemExit(exit_status(signum)) from None


def _report_failed(cfg: DictConfig, command: str, out_dir: str, outcome) -> dict:
    """Pass 3 for a member that failed in the population: its record, and the line a failed job prints."""
    from nasrun.cli.apps import job_failed
    from nasrun.run.lifecycle import reason_of

    reason = (outcome.result or {}).get("reason") or reason_of(outcome.error or RuntimeError("failed"))
    if command == "pipeline":
        from nasrun.run.folder import write_result
        from nasrun.run.pipeline import StageFailed

        write_result(Path(out_dir), "failed", command="pipeline", stage="search", reason=f"search: {reason}",
                     config=_plain(cfg))
        return job_failed(cfg, command, out_dir, StageFailed(f"search: {reason}"), True)
    return job_failed(cfg, command, out_dir, outcome.error or RuntimeError(reason), True)
