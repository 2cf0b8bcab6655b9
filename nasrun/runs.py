"""The run folder: atomic files, metrics rows, result.json, checkpoints and the environment record.

A run folder is the contract with users and with ``nasrun report``: every write here is atomic
(temp file + ``os.replace``) so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import nasrun
from nasrun.errors import RunFolderError

RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(Path(path), lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(Path(path), lambda fh: fh.write(text.encode()))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic(Path(path), lambda fh: torch.save(obj, fh))


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_jsonl(path: Path, before_epoch: int) -> None:
    """Keep only rows of epochs < before_epoch (rows written after the last checkpoint are redone)."""
    rows = [r for r in read_jsonl(path) if r.get("epoch", -1) < before_epoch]
    atomic_write_text(Path(path), "".join(json.dumps(r) + "\n" for r in rows))


def read_result(folder: Path) -> dict | None:
    path = Path(folder) / RESULT
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc})") from None


def environment(device: torch.device) -> dict:
    """What ran the job: enough to tell two machines' figures apart."""
    env = {
        "nasrun": nasrun.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_result(folder: Path, status: str, **fields: Any) -> dict:
    """Write result.json; status is completed, failed or interrupted (with a reason)."""
    result = {"status": status, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    atomic_write_json(Path(folder) / RESULT, result)
    return result


def load_checkpoint(folder: Path) -> dict | None:
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a damaged checkpoint must not be silently ignored
        raise RunFolderError(
            f"{path}: cannot be read ({type(exc).__name__}: {exc}); move it away to start the run afresh"
        ) from None


def check_same_config(folder: Path, saved: dict, current: dict) -> None:
    """Refuse to resume a run folder with a different config (it would mix two experiments)."""
    diffs = sorted(_diff(saved, current))
    if diffs:
        shown = ", ".join(diffs[:5]) + (" ..." if len(diffs) > 5 else "")
        raise RunFolderError(
            f"{folder} holds a run with a different config ({shown}); "
            "choose another hydra.run.dir or use the same overrides to resume"
        )


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in set(a) | set(b):
            if key == "progress":
                continue
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def add_file_log(folder: Path, name: str) -> logging.Handler | None:
    """Log to <folder>/<name> unless Hydra's job logging already does."""
    target = (Path(folder) / name).resolve()
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve() == target:
            return None
    handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def resolve_device(name: str) -> torch.device:
    from nasrun.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} is not allowed: no CUDA device is available here (use device=cpu or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
