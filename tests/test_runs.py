"""The run lifecycle: lock, crafted checkpoints, torn rows, file modes, RNG state and signals."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nasrun.errors import RunFolderError
from nasrun.run.checkpoint import CHECKPOINT, CHECKPOINT_FORMAT, load_checkpoint
from nasrun.run.folder import METRICS, RESULT, RunFolder
from nasrun.run.signals import Interrupted, exit_status, interrupts
from nasrun.run.files import append_jsonl, atomic_write_json, read_jsonl
from nasrun.run.rng import rng_state, set_rng_state

CONFIG = {"seed": 0, "search": {"epochs": 2}}
SCHEMA = {"model": dict, "rng": dict}


def _state(**over) -> dict:
    state = {"config": CONFIG, "epoch": 1, "model": {"w": torch.ones(2)}, "rng": rng_state(torch.device("cpu"))}
    return {**state, **over}


def _one_line_error(run: RunFolder, config: dict = CONFIG) -> str:
    with pytest.raises(RunFolderError) as info:
        run.load_checkpoint(config, SCHEMA)
    message = str(info.value)
    assert "\n" not in message
    assert str(run.path / CHECKPOINT) in message and "move it away" in message
    return message


# ------------------------------------------------------------------------------------ open and lock


def test_open_locks_writes_pid_and_close_releases(tmp_path: Path):
    folder = tmp_path / "a" / "run"
    with RunFolder(folder, "search") as run:
        assert folder.is_dir() and run.is_open
        assert (folder / ".lock").read_text().split("\n")[:2] == [str(os.getpid()), "search"]
        with pytest.raises(RunFolderError, match=rf"is in use by process {os.getpid()} \(this process\)"):
            RunFolder(folder, "retrain").open()
    assert not run.is_open
    with RunFolder(folder, "search") as again:  # released on close: the same folder opens again
        assert again.is_open


def test_lock_held_by_another_process_until_it_is_killed(tmp_path: Path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from nasrun.run.folder import RunFolder
            run = RunFolder({str(folder)!r}, "search").open()
            print("ready", flush=True)
            time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(RunFolderError) as info:
            RunFolder(folder, "search").open()
        assert str(info.value).startswith(f"{folder} is in use by process {holder.pid};")
        assert "hydra.run.dir" in str(info.value)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the flock
        holder.wait(timeout=30)
        holder.stdout.close()
    assert (folder / ".lock").exists()  # the file is left behind; it does not keep the folder locked
    with RunFolder(folder, "search") as run:
        assert run.is_open


@pytest.mark.parametrize("path", ["", ".", "./"])
def test_empty_path_is_refused(path: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunFolderError, match="hydra.run.dir"):
        RunFolder(path, "search").open()
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory


def test_path_under_a_file_is_refused():
    with pytest.raises(RunFolderError) as info:
        RunFolder("/dev/null/x", "search").open()
    assert str(info.value).startswith("/dev/null/x: a parent of it is a file")


def test_path_that_is_a_file_is_refused(tmp_path: Path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match=r"f: is a file, not a folder"):
        RunFolder(tmp_path / "f", "search").open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_folder_is_refused(tmp_path: Path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        with pytest.raises(RunFolderError, match="ro"):
            RunFolder(ro / "run", "search").open()
        with pytest.raises(RunFolderError, match="not writable"):
            RunFolder(ro, "search").open()
    finally:
        ro.chmod(0o700)


def test_folder_that_cannot_be_created_or_written_is_one_line(tmp_path: Path, monkeypatch):
    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as m:  # what root never sees: simulate it
        m.setattr(Path, "mkdir", denied)
        with pytest.raises(RunFolderError, match=r"run: cannot create the run folder \(Permission denied\)$"):
            RunFolder(tmp_path / "run", "search").open()
    monkeypatch.setattr(os, "access", lambda *args: False)
    with pytest.raises(RunFolderError, match=r"run: the run folder is not writable by this user$"):
        RunFolder(tmp_path / "run", "search").open()


def test_open_removes_stale_temp_files_only(tmp_path: Path):
    for name in (".checkpoint.pt.k2j3l4m5.tmp", ".result.json.abc_1234.tmp", "notes.tmp", "metrics.jsonl"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".hydra").mkdir()
    with RunFolder(tmp_path, "search"):
        left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".hydra", ".lock", "metrics.jsonl", "notes.tmp"]


def test_log_handler_added_then_removed(tmp_path: Path):
    root = logging.getLogger()
    before = list(root.handlers)
    with RunFolder(tmp_path, "search", log_name="search.log") as run:
        assert len(root.handlers) == len(before) + 1
        logging.getLogger("nasrun.test").info("hello from the run")
        assert run.write_result("completed", config=CONFIG)["command"] == "search"
    assert root.handlers == before
    assert "hello from the run" in (tmp_path / "search.log").read_text()


# -------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_with_format_and_config_check(tmp_path: Path):
    with RunFolder(tmp_path, "search") as run:
        assert run.load_checkpoint(CONFIG, SCHEMA) is None
        run.save_checkpoint(_state(epoch=3))
        ckpt = run.load_checkpoint(CONFIG, SCHEMA)
        assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["epoch"] == 3
        assert torch.equal(ckpt["model"]["w"], torch.ones(2))
        assert load_checkpoint(tmp_path)["epoch"] == 3  # the module function reads it too
        with pytest.raises(RunFolderError, match=r"different config \(seed: 0 -> 1\)"):
            run.load_checkpoint({**CONFIG, "seed": 1}, SCHEMA)


def test_save_refuses_what_weights_only_cannot_read(tmp_path: Path):
    with RunFolder(tmp_path, "search") as run:
        with pytest.raises(TypeError, match=r"state\['model'\]\['w'\] is numpy.ndarray"):
            run.save_checkpoint(_state(model={"w": np.zeros(2)}))
    assert not (tmp_path / CHECKPOINT).exists()


def test_checkpoint_without_format_from_previous_version_is_accepted(tmp_path: Path):
    torch.save(_state(epoch=0), tmp_path / CHECKPOINT)
    with RunFolder(tmp_path, "search") as run:
        assert run.load_checkpoint(CONFIG, SCHEMA)["epoch"] == 0


class _Payload:
    """Pickles as a call of os.mkdir(marker): what a crafted checkpoint would run on torch.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_code_in_a_checkpoint_never_runs(tmp_path: Path):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    run_dir.mkdir()
    torch.save(_state(model={"w": _Payload(marker)}), run_dir / CHECKPOINT)
    with RunFolder(run_dir, "search") as run:
        message = _one_line_error(run)
        assert "cannot be read, it holds objects that are not plain data" in message and "posix.mkdir" in message
        with pytest.raises(RunFolderError):
            load_checkpoint(run_dir)
    assert not marker.exists()
    torch.load(run_dir / CHECKPOINT, weights_only=False)  # the payload is real: unsafe loading runs it
    assert marker.is_dir()


@pytest.mark.parametrize("state, expected", [
    (_state(model=None) | {"model": None}, "key 'model' is None, expected dict"),
    ({k: v for k, v in _state().items() if k != "model"}, "key 'model' missing"),
    (_state(epoch="abc"), "epoch is 'abc', expected an integer >= 0"),
    (_state(epoch=-1), "epoch is -1, expected an integer >= 0"),
    (_state(epoch=True), "epoch is True, expected an integer >= 0"),
    (_state(model=torch.zeros(3)), "key 'model' is a Tensor, expected dict"),
    (_state(config=[1]), "config is a list, expected a dict"),
    (_state(format="nasrun.checkpoint/2"), "format is 'nasrun.checkpoint/2', expected 'nasrun.checkpoint/1'"),
    ({k: v for k, v in _state().items() if k != "config"}, "key 'config' missing"),
    ([1, 2, 3], "holds a list, expected a dict"),
])
def test_checkpoint_with_wrong_structure_is_refused(tmp_path: Path, state, expected: str):
    torch.save(state, tmp_path / CHECKPOINT)
    with RunFolder(tmp_path, "search") as run:
        assert f"{CHECKPOINT}: {expected}" in _one_line_error(run)


def test_truncated_checkpoint_is_refused(tmp_path: Path):
    with RunFolder(tmp_path, "search") as run:
        run.save_checkpoint(_state())
        data = (tmp_path / CHECKPOINT).read_bytes()
        (tmp_path / CHECKPOINT).write_bytes(data[: len(data) // 2])
        assert "checkpoint.pt: cannot be read, it is damaged or truncated (" in _one_line_error(run)
        (tmp_path / CHECKPOINT).write_bytes(b"")
        assert "checkpoint.pt: cannot be read, it is damaged or truncated (EOFError: the file ends early)" in (
            _one_line_error(run))


# --------------------------------------------------------------------------------------------- rows


def test_torn_last_line_is_dropped_with_a_warning(tmp_path: Path, caplog):
    (tmp_path / METRICS).write_text('{"epoch": 0, "loss": 1.5}\n{"epoch": 1, "loss": 1.2}\n{"epoch": 2, "lo')
    with RunFolder(tmp_path, "search") as run, caplog.at_level(logging.WARNING, logger="nasrun.run.folder"):
        assert run.rows(METRICS) == [{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 1.2}]
        assert "torn line 3" in caplog.text
        run.append(METRICS, {"epoch": 2, "loss": 1.0})  # starts on its own line, the torn bytes are gone
        assert [r["epoch"] for r in run.rows(METRICS)] == [0, 1, 2]
        assert (tmp_path / METRICS).read_text().endswith('{"epoch": 2, "loss": 1.0}\n')


def test_invalid_last_line_with_newline_is_dropped(tmp_path: Path, caplog):
    (tmp_path / METRICS).write_text('{"epoch": 0}\n\x00\x00\x00\n')
    with caplog.at_level(logging.WARNING, logger="nasrun.run.folder"):
        assert read_jsonl(tmp_path / METRICS) == [{"epoch": 0}]
    assert "unreadable last line 2" in caplog.text


def test_garbage_in_the_middle_names_the_line(tmp_path: Path):
    (tmp_path / METRICS).write_text('{"epoch": 0}\nnot json\n{"epoch": 2}\n')
    with RunFolder(tmp_path, "search") as run:
        with pytest.raises(RunFolderError, match=rf"{METRICS}: line 2 is not valid JSON"):
            run.rows(METRICS)


def test_row_that_is_not_an_object_names_the_line(tmp_path: Path):
    (tmp_path / METRICS).write_text('{"epoch": 0}\n[1, 2]\n')
    with RunFolder(tmp_path, "search") as run:
        with pytest.raises(RunFolderError, match=rf"{METRICS}: line 2 holds a list, expected a JSON object"):
            run.rows(METRICS)


def test_truncate_keeps_rows_before_the_checkpoint_epoch(tmp_path: Path):
    with RunFolder(tmp_path, "search") as run:
        for epoch in range(4):
            run.append(METRICS, {"epoch": epoch})
        with open(tmp_path / METRICS, "a") as fh:
            fh.write('{"epoch": 4')  # killed mid-append
        run.truncate(METRICS, 2)
        assert run.rows(METRICS) == [{"epoch": 0}, {"epoch": 1}]
        assert (tmp_path / METRICS).read_text() == '{"epoch": 0}\n{"epoch": 1}\n'
        run.truncate("absent.jsonl", 2)
        assert not (tmp_path / "absent.jsonl").exists()


# ------------------------------------------------------------------------------------------- result


def test_completed_only_for_a_completed_run_of_the_same_config(tmp_path: Path):
    with RunFolder(tmp_path, "search") as run:
        assert run.completed(CONFIG) is None
        run.write_result("interrupted", config=CONFIG)
        assert run.completed(CONFIG) is None
        run.write_result("completed", config=CONFIG, val_acc=0.5)
        assert run.completed(CONFIG)["val_acc"] == 0.5
        with pytest.raises(RunFolderError, match="different config"):
            run.completed({**CONFIG, "seed": 3})


def test_result_that_is_not_an_object_is_refused(tmp_path: Path):
    (tmp_path / RESULT).write_text("[1, 2]\n")
    with RunFolder(tmp_path, "search") as run:
        with pytest.raises(RunFolderError, match=rf"{RESULT}: holds a list, expected a JSON object"):
            run.read_result()


@pytest.mark.parametrize("result,field", [
    ({"status": 5}, "status is 5, expected one of completed, failed, interrupted"),
    ({"status": "done", "config": CONFIG}, "status is 'done', expected one of"),
    ({"config": CONFIG}, "status is missing"),
    ({"status": "completed"}, "a completed run's result has no config"),
    ({"status": "completed", "config": {}}, "a completed run's result has no config"),
    ({"status": "completed", "config": "seed: 0"}, "config is 'seed: 0', expected an object or null"),
    ({"status": "completed", "config": CONFIG, "final": 5}, "final is 5, expected an object or null"),
    ({"status": "completed", "config": CONFIG, "test_acc": "0.9"}, "test_acc is '0.9', expected a number or null"),
    ({"status": "completed", "config": CONFIG, "params": True}, "params is True, expected a number or null"),
    ({"status": "failed", "reason": ["boom"]}, "reason is ['boom'], expected a string or null"),
    ({"status": "interrupted", "last_epoch": 1.5}, "last_epoch is 1.5, expected an integer or null"),
])
def test_result_fields_nasrun_reads_back_are_checked(tmp_path: Path, result: dict, field: str):
    (tmp_path / RESULT).write_text(json.dumps(result))
    with RunFolder(tmp_path, "search") as run:
        with pytest.raises(RunFolderError) as info:
            run.completed(CONFIG)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / RESULT}: {field}") and "\n" not in message, message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_result_or_saved_config_that_is_a_pipe_is_refused_without_blocking(tmp_path: Path):
    from nasrun.run.folder import read_result, read_saved_config

    os.mkfifo(tmp_path / RESULT)
    (tmp_path / ".hydra").mkdir()
    os.mkfifo(tmp_path / ".hydra" / "config.yaml")
    with pytest.raises(RunFolderError, match=rf"{RESULT}: not a regular file"):
        read_result(tmp_path)
    with pytest.raises(RunFolderError, match=r"config\.yaml: not a regular file"):
        read_saved_config(tmp_path)


@pytest.mark.parametrize("text,problem", [
    ("seed: [1\n", "not valid YAML at line 2, column 1"),
    ("", "is empty, expected the mapping of config keys"),
    ("{}\n", "is empty, expected the mapping of config keys"),
    ("- seed\n- 2\n", "holds a list, expected the mapping of config keys"),
    ("just text\n", "holds a str, expected the mapping of config keys"),
    (b"\xff\xfe", "not UTF-8 text (invalid start byte at byte 0)"),
])
def test_a_damaged_saved_config_is_one_line_naming_the_file(tmp_path: Path, text, problem: str):
    from nasrun.run.folder import read_saved_config

    (tmp_path / ".hydra").mkdir()
    path = tmp_path / ".hydra" / "config.yaml"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    with pytest.raises(RunFolderError) as info:
        read_saved_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / '.hydra' / 'config.yaml'}: {problem}"), str(info.value)


def test_saved_config_is_checked_only_where_a_run_resumes(tmp_path: Path):
    """Hydra rewrites .hydra/config.yaml: in a folder with nothing to resume (a run that failed before its first
    checkpoint) a new command line may start afresh; with a checkpoint or a completed result it may not."""
    from nasrun.run.saved_config import check_saved_config

    saved = tmp_path / ".hydra"
    saved.mkdir()
    (saved / "config.yaml").write_text("seed: 2\nsearch:\n  epochs: 2\n")
    (saved / "overrides.yaml").write_text("- seed=2\n")
    current = {"seed": 3, "search": {"epochs": 2}}
    (tmp_path / RESULT).write_text(json.dumps({"status": "failed", "reason": "no data", "config": current}))
    check_saved_config(tmp_path, ".hydra", current, ["seed=3"])  # nothing to resume: accepted
    (tmp_path / RESULT).write_text(json.dumps({"status": "completed", "config": {"seed": 2}}))
    with pytest.raises(RunFolderError, match=r"holds a run with a different config \(seed: 2 -> 3\); choose another"):
        check_saved_config(tmp_path, ".hydra", current, ["seed=3"])
    (tmp_path / RESULT).unlink()
    (tmp_path / "search").mkdir()  # a pipeline job: its search stage's checkpoint
    torch.save({"epoch": 0}, tmp_path / "search" / CHECKPOINT)
    with pytest.raises(RunFolderError, match=r"config\.yaml: was edited after the run started \(seed: 2 -> 3: the "):
        check_saved_config(tmp_path, ".hydra", current, ["seed=2"])
    check_saved_config(tmp_path, ".hydra", {**current, "seed": 2, "progress": False}, ["seed=2"])  # the same run


# ------------------------------------------------------------------ resume through the console script
def _nasrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "nasrun", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, list[str]]:
    """One completed tiny search run folder (copied by each test) and its command line."""
    from conftest import TINY_SYNTH

    root = tmp_path_factory.mktemp("searched")
    args = ["search", *[o.replace("search.epochs=2", "search.epochs=1") for o in TINY_SYNTH]]
    proc = _nasrun(*args, f"hydra.run.dir={root / 'run'}", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "run", args


def _copy(searched, tmp_path: Path) -> tuple[Path, list[str]]:
    import shutil

    folder, args = searched
    run = tmp_path / "run"
    shutil.copytree(folder, run)
    (run / ".lock").unlink(missing_ok=True)
    return run, [*args, f"hydra.run.dir={run}"]


def test_resume_refuses_a_result_json_nasrun_cannot_have_written(searched, tmp_path: Path):
    run, args = _copy(searched, tmp_path)
    (run / RESULT).write_text('{"status": 5}')
    line = _one_line(_nasrun(*args, cwd=tmp_path))
    assert line.endswith(f"{run / RESULT}: status is 5, expected one of completed, failed, interrupted; move it away "
                         "to start the run afresh")
    assert (run / RESULT).read_text() == '{"status": 5}'  # kept as it was, for the user to see


@pytest.mark.parametrize("text,problem", [
    ("seed: [2\n", "not valid YAML"), ("", "is empty"), ("- 2\n", "holds a list"),
])
def test_resume_refuses_a_damaged_saved_config_before_hydra_rewrites_it(searched, tmp_path: Path, text, problem):
    run, args = _copy(searched, tmp_path)
    (run / ".hydra" / "config.yaml").write_text(text)
    line = _one_line(_nasrun(*args, cwd=tmp_path))
    assert line.startswith(f"nasrun search: error: {run / '.hydra' / 'config.yaml'}: {problem}"), line
    assert (run / ".hydra" / "config.yaml").read_text() == text


def test_resume_refuses_an_edited_saved_config_and_keeps_the_run_s_own(searched, tmp_path: Path):
    run, args = _copy(searched, tmp_path)
    path = run / ".hydra" / "config.yaml"
    original = path.read_text()
    path.write_text(original.replace("seed: 2\n", "seed: 77\n", 1))
    line = _one_line(_nasrun(*args, cwd=tmp_path))
    assert line.startswith(f"nasrun search: error: {path}: was edited after the run started (seed: 77 -> 2: ")
    path.write_text(original)
    result = (run / RESULT).read_text()
    line = _one_line(_nasrun(*[a for a in args if not a.startswith("seed=")], "seed=3", cwd=tmp_path))
    assert line == (f"nasrun search: error: {run} holds a run with a different config (seed: 2 -> 3); choose "
                    "another hydra.run.dir or use the same overrides to resume")
    assert path.read_text() == original and (run / RESULT).read_text() == result  # the refused line wrote nothing


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_as_the_saved_config_is_refused_not_waited_on(searched, tmp_path: Path):
    run, args = _copy(searched, tmp_path)
    (run / ".hydra" / "config.yaml").unlink()
    os.mkfifo(run / ".hydra" / "config.yaml")
    line = _one_line(_nasrun(*args, cwd=tmp_path))  # Hydra itself would block opening it for writing
    assert f"{run / '.hydra' / 'config.yaml'}: not a regular file" in line


def test_retrain_of_a_search_folder_with_a_bad_result_json_is_refused(searched, tmp_path: Path, capsys):
    from nasrun.cli.dispatch import main

    run, _ = _copy(searched, tmp_path)
    (run / RESULT).write_text('{"status": "completed", "config": {"space": 5}, "final": {}}')
    for command in ("retrain", "show"):
        with pytest.raises(SystemExit) as exit_:
            main([command, f"genotype={run}", f"hydra.run.dir={tmp_path / 'rt'}"][: 3 if command == "retrain" else 2])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err == f"nasrun {command}: error: {run}: the search's saved config has a bad space (it is int, not a " \
                      "mapping)", err
    (run / RESULT).write_text('{"status": 5}')
    with pytest.raises(SystemExit):
        main(["retrain", f"genotype={run}", f"hydra.run.dir={tmp_path / 'rt'}"])
    assert capsys.readouterr().err.strip().endswith(f"{run / RESULT}: status is 5, expected one of completed, "
                                                    "failed, interrupted; move it away to start the run afresh")
    assert not (tmp_path / "rt").exists()  # refused before any work


def test_files_follow_the_umask(tmp_path: Path):
    old = os.umask(0o022)
    try:
        with RunFolder(tmp_path / "run", "search") as run:
            run.write_result("completed", config=CONFIG)
            run.save_checkpoint(_state())
            run.append(METRICS, {"epoch": 0})
            atomic_write_json(run.path / "other.json", {"a": 1})
        os.umask(0o027)
        atomic_write_json(tmp_path / "group.json", {"a": 1})
    finally:
        os.umask(old)
    for name in (RESULT, CHECKPOINT, METRICS, "other.json", ".lock"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((tmp_path / "group.json").stat().st_mode) == 0o640
    assert json.loads((tmp_path / "run" / RESULT).read_text())["status"] == "completed"


def test_module_append_and_read_jsonl(tmp_path: Path):
    append_jsonl(tmp_path / "g.jsonl", {"epoch": 0, "genotype": [["skip_connect", 0]]})
    assert read_jsonl(tmp_path / "g.jsonl") == [{"epoch": 0, "genotype": [["skip_connect", 0]]}]
    assert read_jsonl(tmp_path / "absent.jsonl") == []


# ---------------------------------------------------------------------------------- RNG and signals


def test_rng_state_round_trips_through_weights_only_load(tmp_path: Path):
    cpu = torch.device("cpu")
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    torch.save(rng_state(cpu), tmp_path / "rng.pt")
    first = (torch.rand(5), random.random(), np.random.rand(3))
    torch.rand(100), random.random(), np.random.rand(10)  # the state moves on
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), cpu)
    again = (torch.rand(5), random.random(), np.random.rand(3))
    assert torch.equal(first[0], again[0])
    assert first[1] == again[1]
    assert np.array_equal(first[2], again[2])


def test_rng_state_of_a_torch_only_checkpoint_still_restores():
    saved = {"torch": torch.get_rng_state()}
    expected = torch.rand(3)
    set_rng_state(saved, torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(RunFolderError, match="RNG state cannot be restored"):
        set_rng_state({"python": [3]}, torch.device("cpu"))


def test_sigterm_inside_interrupts_raises_interrupted():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as info:
        with interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at the next bytecode: this sleep is cut short
    assert info.value.signum == signal.SIGTERM
    assert str(info.value) == "interrupted by SIGTERM"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert exit_status(info.value.signum) == 143
    assert exit_status(signal.SIGINT) == 130


def test_sigint_inside_interrupts_is_not_a_keyboard_interrupt():
    with pytest.raises(Interrupted) as info:
        with interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert info.value.signum == signal.SIGINT
    assert not isinstance(info.value, (KeyboardInterrupt, Exception))


def test_interrupts_outside_the_main_thread_changes_nothing():
    import threading

    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def body():
        with interrupts():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before]
