"""A submitit job of several tasks (the Slurm preset with nodes × tasks_per_node > 1) is one DDP job.

The Slurm side is checked through its environment (the SLURM_* variables srun gives each task); the
whole path, launcher to result.json, runs under Hydra's submitit_local launcher, whose local executor
starts ``tasks_per_node`` real processes with submitit's own task variables, as a Slurm job's srun does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nasrun.parallel import distributed
from test_distributed import DDP_RETRAIN, _env, assert_same_metrics, assert_same_weights, metrics, weights
from test_distributed import one_process  # noqa: F401 - a fixture, used by name

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def slurm_task(monkeypatch, procid: int, localid: int, job_id: str = "4242", ntasks: int = 16, **extra: str) -> dict:
    """The environment srun gives task ``procid`` of a 2-node job (os.environ is a dict here; monkeypatch restores it)."""
    env = {k: v for k, v in os.environ.items() if k not in TORCH_VARS and not k.startswith(("SLURM_", "SUBMITIT_"))}
    env.update(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID=job_id, SLURM_NTASKS=str(ntasks), SLURM_JOB_NUM_NODES="2",
               SLURM_NODEID=str(procid // 8), SLURM_PROCID=str(procid), SLURM_LOCALID=str(localid),
               SLURM_JOB_NODELIST="gpu[07-08]", CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7", **extra)
    monkeypatch.setattr(os, "environ", env)
    return env


def test_a_slurm_task_gets_torchruns_variables(monkeypatch):
    env = slurm_task(monkeypatch, procid=9, localid=1)
    assert distributed.join_submitit_job()
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")} == {
        "RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07"}
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"  # the task takes cuda:LOCAL_RANK of its node's GPUs
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (9, 16, 1)
    port = env["MASTER_PORT"]
    assert 20000 <= int(port) <= 60000

    assert distributed.join_submitit_job() is False  # WORLD_SIZE is set now: nothing changes
    slurm_task(monkeypatch, procid=0, localid=0)
    distributed.join_submitit_job()
    assert os.environ["MASTER_PORT"] == port  # every task of the job agrees on it
    slurm_task(monkeypatch, procid=0, localid=0, job_id="4243")
    distributed.join_submitit_job()
    assert os.environ["MASTER_PORT"] != port  # another job (of an array, say) on the same node: another port


def test_a_set_port_torchrun_and_one_task_jobs_are_left_alone(monkeypatch):
    env = slurm_task(monkeypatch, procid=3, localid=3, MASTER_PORT="29500")
    distributed.join_submitit_job()
    assert env["MASTER_PORT"] == "29500" and env["RANK"] == "3"
    env = slurm_task(monkeypatch, procid=3, localid=3, WORLD_SIZE="8", RANK="5")  # torchrun inside the task
    assert distributed.join_submitit_job() is False and env["RANK"] == "5"
    env = slurm_task(monkeypatch, procid=0, localid=0, ntasks=1)
    assert distributed.join_submitit_job() is False and "WORLD_SIZE" not in env
    monkeypatch.setattr(os, "environ", {k: v for k, v in env.items() if k != "SUBMITIT_EXECUTOR"})
    assert distributed.join_submitit_job() is False  # not in a submitit job


def submitit_local(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``nasrun <args>`` through Hydra's submitit_local launcher, each job of two tasks."""
    cmd = [sys.executable, "-m", "nasrun", *args[:1], "-m", "hydra/launcher=submitit_local",
           "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=10", *args[1:]]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env(), timeout=300)


def test_a_two_task_job_trains_as_one_process(one_process: Path, tmp_path: Path):  # noqa: F811 - the fixture
    sweep = tmp_path / "sweep"
    proc = submitit_local("retrain", *DDP_RETRAIN, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = sweep / "job"
    assert_same_weights(weights(one_process), weights(run))
    assert_same_metrics(metrics(one_process), metrics(run))
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and result["world_size"] == 2
    assert result["test_acc"] == json.loads((one_process / "result.json").read_text())["test_acc"]
    assert sorted(p.name for p in sweep.iterdir()) == [".submitit", "job", "multirun.yaml"]
    # both tasks wrote the same .hydra/ files into the job folder; rank 0 alone wrote retrain.log
    assert OmegaConf.load(run / ".hydra" / "config.yaml").recipe.sync_bn is True
    log = (run / "retrain.log").read_text()
    assert "rank 0 of 2" in log and "epoch 2/2" in log and "rank 1" not in log
    task_logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(task_logs) == 2 and "epoch 2/2" not in task_logs[1].read_text()


def test_a_pipeline_of_several_tasks_is_refused_before_it_is_queued(tmp_path: Path):
    proc = submitit_local("pipeline", "experiment=quickstart", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"nasrun pipeline: error: {distributed.PIPELINE_REFUSED}"]
    assert not any(tmp_path.iterdir())


def test_a_global_batch_the_tasks_cannot_split_is_refused_before_it_is_queued(tmp_path: Path):
    proc = submitit_local("search", "experiment=quickstart", "search.batch_size=33", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "search.batch_size=33" in lines[0] and "job of 2 tasks" in lines[0], lines
    assert not any(tmp_path.iterdir())
