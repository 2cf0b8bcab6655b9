"""What a sweep needs to finish: failure records for jobs that fail before they start, and the outcome.

A job that fails inside ``run_search`` / ``run_retrain`` / ``run_pipeline`` records itself; one that
fails earlier (its config or genotype) is recorded here. After a multirun, :class:`SweepOutcome`
finds the jobs that did not complete, so the dispatcher can list them and exit non-zero.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback

from nasrun.errors import RunFolderError
from nasrun.run.lifecycle import reason_of
from nasrun.run.folder import RESULT, read_result, write_result


def record_failure(out_dir: str | Path, command: str, exc: BaseException, config: Optional[dict] = None) -> dict:
    """Make sure a failed job's folder says so in result.json; return what the sweep gets back.

    ``run_search``, ``run_retrain`` and ``run_pipeline`` write their own failure record (with the wall
    time); this covers what happens before they start (config or genotype problems).
    """
    out = Path(out_dir)
    reason = reason_of(exc)
    if isinstance(exc, RunFolderError):  # the folder itself was refused (another run's, in use, damaged): keep it
        return {"status": "failed", "command": command, "reason": reason}
    try:
        existing = read_result(out)
    except Exception:  # noqa: BLE001 - a damaged result.json is replaced by the failure record
        existing = None
    if existing and existing.get("status") == "failed":
        return existing
    fields: dict[str, Any] = {"command": command, "reason": reason}
    if config is not None:
        fields["config"] = config
    return write_result(out, "failed", **fields)


def failed_jobs(sweep_dir: str | Path) -> tuple[int, list[tuple[Path, str]]]:
    """Jobs under a sweep folder and the failed ones with their reasons.

    A job is the first folder on each path down from ``sweep_dir`` that holds result.json (a pipeline
    job's own result.json stands for both of its stages).
    """
    jobs, failed = 0, []
    root = Path(sweep_dir)
    if not root.is_dir():
        return 0, []
    stack = [root]
    while stack:
        folder = stack.pop()
        if (folder / RESULT).is_file():
            jobs += 1
            try:
                result = read_result(folder) or {}
            except Exception as exc:
                result = {"status": "failed", "reason": str(exc)}
            if result.get("status") != "completed":
                failed.append((folder, f"{result.get('status')}: {result.get('reason') or 'no reason recorded'}"))
            continue
        stack.extend(sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                            reverse=True))
    return jobs, sorted(failed)


class SweepOutcome(Callback):
    """Hydra callback: after a multirun, find the jobs that did not complete (run in the launching process).

    The dispatcher reads :attr:`last` after the application returns and exits non-zero when jobs failed.
    It scans the sweep folder because launchers such as joblib or submitit run jobs in other processes.
    """

    last: Optional[tuple[Path, int, list[tuple[Path, str]]]] = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        SweepOutcome.last = None

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs, failed = failed_jobs(sweep_dir)
        SweepOutcome.last = (sweep_dir, jobs, failed)


def finish_sweep(command: str) -> None:
    """After a multirun: name the sweep folder, and exit 1 listing the jobs that did not complete."""
    if SweepOutcome.last is None:
        return
    sweep_dir, count, failed = SweepOutcome.last
    print(f"sweep folder: {sweep_dir}  ({count} jobs; summarise with: nasrun report {sweep_dir})")
    if failed:
        print(f"nasrun {command}: {len(failed)} of {count} jobs did not complete:", file=sys.stderr)
        for folder, reason in failed:
            print(f"  {folder}: {reason}", file=sys.stderr)
        raise SystemExit(1)
