"""The command line end to end on digits with a tiny supernet: search, retrain, show, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra.experimental.callback import Callback

from conftest import TINY_RETRAIN, TINY_SEARCH

NASRUN = [sys.executable, "-c", "from nasrun.cli.dispatch import main; main()"]


def nasrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"  # tiny networks: one thread is faster and steadier
    return subprocess.run([*NASRUN, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("cli")
    run = base / "search"
    proc = nasrun("search", *TINY_SEARCH, "seed=3", f"hydra.run.dir={run}", cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert str(run) in proc.stdout
    return run


def test_search_writes_the_run_folder(searched: Path):
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "search.log", "metrics.jsonl", "genotypes.jsonl",
                 "alphas.npz", "checkpoint.pt", "genotype.json", "cells.png", "result.json"):
        assert (searched / name).exists(), name
    rows = [json.loads(line) for line in (searched / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    for key in ("train_loss", "val_acc", "lr", "alpha_entropy_normal", "skip_normal", "seconds", "images_per_s"):
        assert key in rows[0]
    assert rows[1]["lr"] < rows[0]["lr"]  # cosine schedule
    alphas = np.load(searched / "alphas.npz")
    assert alphas["normal"].shape == (2, 5, 4)  # epochs x edges (2 nodes) x ops
    np.testing.assert_allclose(alphas["normal"].sum(-1), 1.0, rtol=1e-6)
    result = json.loads((searched / "result.json").read_text())
    assert result["status"] == "completed"
    assert result["config"]["seed"] == 3 and result["config"]["dataset"]["name"] == "digits"
    assert result["split"]["train"] + result["split"]["val"] == result["data"]["num_train"]
    genotype = json.loads((searched / "genotype.json").read_text())
    assert genotype["format"] == "nasrun.genotype/4" and genotype["nodes"] == 2
    assert genotype.pop("space_description")["nodes"] == 2  # genotype.json carries its space; the rows do not
    last = json.loads((searched / "genotypes.jsonl").read_text().splitlines()[-1])["genotype"]
    assert genotype == {k: v for k, v in last.items() if k != "space_description"}
    assert "epoch 2/2" in (searched / "search.log").read_text()


def test_completed_search_is_not_redone(searched: Path):
    mtime = (searched / "checkpoint.pt").stat().st_mtime_ns
    proc = nasrun("search", *TINY_SEARCH, "seed=3", f"hydra.run.dir={searched}", cwd=searched.parent)
    assert proc.returncode == 0, proc.stderr
    assert (searched / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_retrain_from_run_folder_uses_the_search_dataset(searched: Path, tmp_path: Path):
    run = tmp_path / "retrain"
    proc = nasrun("retrain", f"genotype={searched}", *TINY_RETRAIN, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed"
    assert result["dataset"] == "digits" and result["search_run"] == str(searched)
    assert 0.0 <= result["test_acc"] <= 1.0 and result["params"] > 0 and result["macs"] > 0
    assert (run / "model.pt").exists() and (run / "metrics.jsonl").exists()
    assert "test accuracy" in proc.stdout


def test_retrain_published_genotype_on_digits(tmp_path: Path):
    run = tmp_path / "r"
    proc = nasrun("retrain", "genotype=DARTS_V2", "dataset=digits", *TINY_RETRAIN, f"hydra.run.dir={run}",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "result.json").read_text())["genotype_source"] == "DARTS_V2"


def test_show_published_genotype(tmp_path: Path):
    proc = nasrun("show", "genotype=DARTS_V2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3.3" in proc.stdout and "multiply-adds" in proc.stdout and "sep_conv_3x3" in proc.stdout


def test_help_lists_commands_and_groups(tmp_path: Path):
    top = nasrun("--help", cwd=tmp_path)
    assert top.returncode == 0
    for word in ("search", "retrain", "show", "select", "darts_2nd", "digits", "quickstart", "quick"):
        assert word in top.stdout
    sub = nasrun("search", "--help", cwd=tmp_path)
    assert sub.returncode == 0
    assert "method        amended, beta_darts, [darts], darts_2nd, darts_minus, darts_pt, drnas" in sub.stdout and "supernet.C = 16" in sub.stdout
    assert "precision = 'fp32'   # fp32 | bf16" in sub.stdout and "channels_last = False   #" in sub.stdout
    chosen = nasrun("search", "method=amended", "--help", cwd=tmp_path)
    assert "estimator     [amended]" in chosen.stdout and "estimator.eta = 0.1" in chosen.stdout
    assert "perturbation.epsilon" not in chosen.stdout  # only the chosen components' keys


@pytest.mark.parametrize(
    "args, words",
    [
        (["search", "method=foo"], ["method", "foo", "darts_2nd"]),
        (["search", "search.epochs=-1"], ["search.epochs", "-1", "from 1 to 100000"]),  # the allowed range
        (["search", "supernet.C=0"], ["supernet.C", "0"]),
        (["search", "space.ops=[none,conv_9x9]"], ["space.ops", "conv_9x9", "sep_conv_3x3"]),
        (["search", "method.foo=1"], ["method.foo"]),
        (["search", "seed=1.5"], ["seed", "1.5"]),
        (["search", "device=tpu"], ["device", "tpu", "cuda"]),
        (["retrain", "genotype=DARTS_V2", "precision=fp16"], ["precision", "fp16", "fp32, bf16"]),
        (["search", "-m", "seed=0,1", "search.epochs=0,1"], ["search.epochs", "0"]),
        (["retrain", "recipe=nope"], ["recipe", "nope", "quick"]),
        (["retrain", "recipe=quick"], ["genotype"]),
        (["retrain", "genotype=NOT_A_GENOTYPE", "recipe=quick"], ["NOT_A_GENOTYPE", "DARTS_V2"]),
        (["show", "genotype=DARTS_V9"], ["DARTS_V9", "DARTS_V1"]),
        (["frobnicate"], ["frobnicate", "search"]),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args, words):
    proc = nasrun(*args, "progress=false", cwd=tmp_path) if args[0] != "frobnicate" else nasrun(*args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "outputs").exists()


def test_broken_genotype_file_is_reported(tmp_path: Path):
    bad = tmp_path / "genotype.json"
    bad.write_text(json.dumps({"format": "nasrun.genotype/1", "normal": [["sep_conv_9x9", 0]]}))
    proc = nasrun("retrain", f"genotype={bad}", "recipe=quick", "dataset=digits", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "reduce_concat" in proc.stderr  # names the file and what is missing
    assert len(proc.stderr.strip().splitlines()) == 1
    # the same in the current format
    bad.write_text(json.dumps({"format": "nasrun.genotype/2", "cells": {"normal": {"edges": [["sep_conv_9x9", 0, 2]]}}}))
    proc = nasrun("retrain", f"genotype={bad}", "recipe=quick", "dataset=digits", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "'inputs'" in proc.stderr  # names the file and what is missing
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_cifar_names_the_path_and_how_to_get_it(tmp_path: Path):
    run = tmp_path / "run"
    proc = nasrun("search", f"dataset.root={tmp_path / 'nowhere'}", "progress=false", f"hydra.run.dir={run}",
                  cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(tmp_path / "nowhere") in proc.stderr and "dataset.download" in proc.stderr
    assert json.loads((run / "result.json").read_text())["status"] == "failed"


def test_unified_retrain_takes_the_search_settings(searched: Path, tmp_path: Path):
    run = tmp_path / "unified"
    proc = nasrun("retrain", f"genotype={searched}", *TINY_RETRAIN, "recipe.unify=true", f"hydra.run.dir={run}",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "result.json").read_text())
    search = json.loads((searched / "result.json").read_text())["config"]["search"]
    unified = result["unified_from_search"]
    for key in ("lr", "lr_min", "momentum", "weight_decay", "batch_size", "grad_clip"):
        assert unified[f"recipe.{key}"] == search[key]
        assert result["config"]["recipe"][key] == search[key]
    assert result["config"]["recipe"]["cutout"] == 0
    # size and length still come from the recipe
    assert (result["config"]["recipe"]["C"], result["config"]["recipe"]["epochs"]) == (4, 1)


def test_unify_needs_a_search_run_folder(tmp_path: Path):
    proc = nasrun("retrain", "genotype=DARTS_V2", "recipe.unify=true", "dataset=digits", cwd=tmp_path)
    assert proc.returncode == 2 and "recipe.unify" in proc.stderr


def _console_script() -> list[str]:
    """The installed ``nasrun`` entry point when there is one (a checkout without install: ``python -m nasrun``)."""
    import shutil

    found = shutil.which("nasrun")
    return [found] if found else [sys.executable, "-m", "nasrun"]


@pytest.mark.parametrize("args, status", [(["--help"], 0), (["search", "--help"], 0), (["retrain", "--help"], 0),
                                          (["search", "serach.epochs=2"], 2), (["frobnicate"], 2)])
def test_help_and_a_mistyped_key_do_not_import_torch(args: list[str], status: int, tmp_path: Path):
    """The console entry point answers help and a typo without importing torch (seconds saved on every typo).

    ``PYTHONPROFILEIMPORTTIME`` makes the interpreter list every module it imports on stderr.
    """
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run([*_console_script(), *args], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == status, proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert len(imported) > 50  # the listing is there: hydra and omegaconf alone import dozens of modules
    assert not [m for m in imported if m.split(".")[0] == "torch"]
    if status == 2:
        errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
        assert len(errors) == 1 and errors[0].startswith("nasrun ") and "Traceback" not in proc.stderr, errors


@pytest.mark.parametrize("args, shown", [
    (["search", "++search.epochs=1"], "  epochs: 1\n"),  # ++ sets a key that exists
    (["search", "experiment=quickstart"], "  epochs: 10\n"),  # the preset sets recipe keys too: not typed, not refused
    (["retrain", "genotype=DARTS_V2", "experiment=quickstart"], "name: quick\n"),  # and search keys
    (["pipeline", "recipe.epochs=2", "search.epochs=1"], "  epochs: 2\n"),  # a pipeline reads both stages
    (["search", "seed=4", "--cfg", "job", "channels_last=true"], "channels_last: true\n"),  # a flag among overrides
    (["search", "+hydra.job.env_set.NASRUN_FUZZ=1"], "seed: 2\n"),  # an open mapping of Hydra's takes new keys
])
def test_accepted_command_lines_print_their_config(args, shown, tmp_path, monkeypatch, capsys):
    from nasrun.cli.dispatch import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nasrun"])
    main([*args, *([] if "--cfg" in args else ["--cfg", "job"])])
    captured = capsys.readouterr()
    assert shown in captured.out and captured.err == "", captured.err
    assert not list(tmp_path.iterdir())  # --cfg composes and prints; nothing runs


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (the SigCgt mask of /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


def _sigterm(tmp_path: Path, ready) -> tuple[subprocess.CompletedProcess, Path]:
    """Start a tiny search through the console script, send SIGTERM once ``ready(proc, started)``; its outcome."""
    if not Path(f"/proc/{os.getpid()}/status").exists():
        pytest.skip("needs /proc to see when the handlers are in place")
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    started = time.monotonic()
    proc = subprocess.Popen([*_console_script(), "search", *TINY_SEARCH, "search.epochs=40", f"hydra.run.dir={run}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        while proc.poll() is None and not ready(proc, started):
            assert time.monotonic() - started < 240, "the command never reached the point to interrupt"
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), run


@pytest.mark.parametrize("after", [0.3, 1.5])
def test_an_early_sigterm_exits_143_with_one_line(after: float, tmp_path: Path):
    """SIGTERM while the command starts (imports, composing, checking): 143 and one line, never a silent -15."""
    proc, run = _sigterm(tmp_path, lambda p, t0: time.monotonic() - t0 >= after and _catches_sigterm(p.pid))
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("nasrun search: interrupted by SIGTERM"), proc.stderr
    assert "Traceback" not in proc.stderr
    if run.exists():  # the signal came after Hydra made the run folder: the folder says what happened
        assert json.loads((run / "result.json").read_text())["status"] == "interrupted"


def test_a_sigterm_as_soon_as_the_run_folder_exists_is_recorded(tmp_path: Path):
    """The folder appears before the run's own handling starts; the record must not depend on that."""
    proc, run = _sigterm(tmp_path, lambda p, t0: (tmp_path / "run").exists())
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "interrupted" and result["signal"] == "SIGTERM"


class StopAtJobStart(Callback):
    """A Hydra callback that is a SIGTERM arriving after Hydra made the job folder, before the job's code runs."""

    def on_job_start(self, config, **kwargs) -> None:
        from nasrun.run.signals import Interrupted

        raise Interrupted(signal.SIGTERM)


def test_a_signal_while_hydra_starts_the_job_is_recorded_in_its_folder(tmp_path, monkeypatch, capsys):
    from nasrun.cli.dispatch import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nasrun"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    before = signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["search", *TINY_SEARCH, f"hydra.run.dir={run}", "+hydra.callbacks.stop._target_=test_cli.StopAtJobStart"])
    assert exit_.value.code == 143
    err = capsys.readouterr().err.splitlines()
    assert err == [f"nasrun search: interrupted by SIGTERM; recorded in {run / 'result.json'}: rerun the same command "
                   "to resume"], err
    result = json.loads((run / "result.json").read_text())
    assert (result["status"], result["signal"], result["command"]) == ("interrupted", "SIGTERM", "search")
    assert (run / ".hydra" / "config.yaml").exists()  # the folder Hydra made, found through its run_job
    assert signal.getsignal(signal.SIGINT) is before  # an in-process caller keeps its handlers


def test_an_early_interruption_is_recorded_only_where_nothing_else_is(tmp_path):
    from nasrun.run.signals import record_interrupted

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert record_interrupted(fresh, "retrain", signal.SIGINT)
    result = json.loads((fresh / "result.json").read_text())
    assert (result["status"], result["signal"], result["command"], result["last_epoch"]) == (
        "interrupted", "SIGINT", "retrain", None)
    done = tmp_path / "done"
    done.mkdir()
    (done / "result.json").write_text('{"status": "completed"}')
    assert record_interrupted(done, "search", signal.SIGTERM)  # the folder has a record: it is kept
    assert json.loads((done / "result.json").read_text()) == {"status": "completed"}
    assert not record_interrupted(tmp_path / "absent", "search", signal.SIGTERM)
    busy = tmp_path / "busy"
    busy.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(busy / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d\\n' % os.getpid())\n"
                               "print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert not record_interrupted(busy, "search", signal.SIGTERM)  # another process's run: left alone
        assert not (busy / "result.json").exists()
    finally:
        holder.kill()
        holder.wait()
