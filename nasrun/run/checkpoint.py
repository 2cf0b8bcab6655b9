"""Checkpoints read as data only (``torch.load(weights_only=True)``), checked field by field, and the
rule that a resumed run has the configuration it was started with.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import re

from nasrun.errors import RunFolderError
from nasrun.run.files import AFRESH, kind_of


CHECKPOINT = "checkpoint.pt"


CHECKPOINT_FORMAT = "nasrun.checkpoint/1"


def load_checkpoint(folder: Path) -> dict | None:
    """checkpoint.pt of ``folder`` (None if absent), read with weights_only=True: it cannot run code."""
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    return read_checkpoint_file(path)


def read_checkpoint_file(path: Path) -> Any:
    """torch.load(weights_only=True) to the CPU; any failure is one RunFolderError line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or unsafe checkpoint must not be silently ignored
        reason = _first_reason(exc)
        what = "holds objects that are not plain data" if "GLOBAL" in reason else "is damaged or truncated"
        raise RunFolderError(
            f"{path}: cannot be read, it {what} ({type(exc).__name__}: {reason}); {AFRESH}"
        ) from None


def _first_reason(exc: Exception) -> str:
    """The informative line of torch's long, multi-line load errors (e.g. the blocked GLOBAL)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            reason = line.split("error: ", 1)[-1]
            return reason if len(reason) <= 200 else reason[:200] + "..."
    reason = lines[0] if lines else ("the file ends early" if isinstance(exc, EOFError) else "no detail")
    return reason if len(reason) <= 200 else reason[:200] + "..."


def check_same_config(folder: Path, saved: dict, current: dict) -> None:
    """Refuse to resume a run folder with a different config (it would mix two experiments).

    A key the saved config does not have was added by a later nasrun: it is not a difference, so a
    run started before a new option existed still resumes.
    """
    diffs = config_differences(saved, current)
    if diffs:
        raise RunFolderError(different_config_message(folder, diffs))


def config_differences(saved: Any, current: Any) -> list[str]:
    """``key: saved -> current`` for every key the two configs disagree on (keys new in ``current`` and
    ``progress`` do not count: see :func:`check_same_config`)."""
    return sorted(_diff(saved, current))


def shown_differences(diffs: list[str]) -> str:
    return ", ".join(diffs[:5]) + (" ..." if len(diffs) > 5 else "")


def different_config_message(folder: Path, diffs: list[str]) -> str:
    return (f"{folder} holds a run with a different config ({shown_differences(diffs)}); "
            "choose another hydra.run.dir or use the same overrides to resume")


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in set(a) | set(b):
            if key == "progress" or key not in a:
                continue
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]



def _type_names(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(t.__name__ for t in types)


def validate_checkpoint(path: Path, ckpt: Any, schema: Mapping[str, type | tuple[type, ...]]) -> dict:
    """Check a loaded checkpoint's structure before anything uses it; one RunFolderError line if wrong."""

    def bad(what: str) -> RunFolderError:
        return RunFolderError(f"{path}: {what}; {AFRESH}")

    if not isinstance(ckpt, dict):
        raise bad(f"holds {kind_of(ckpt)}, expected a dict")
    # A checkpoint without "format" was written by nasrun before the tag existed (same layout):
    # it is accepted when it passes every other check below.
    fmt = ckpt.get("format", CHECKPOINT_FORMAT)
    if fmt != CHECKPOINT_FORMAT:
        raise bad(f"format is {fmt!r}, expected {CHECKPOINT_FORMAT!r} (written by another nasrun version)")
    if "epoch" not in ckpt:
        raise bad("key 'epoch' missing")
    epoch = ckpt["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise bad(f"epoch is {epoch!r}, expected an integer >= 0")
    if "config" not in ckpt:
        raise bad("key 'config' missing")
    if not isinstance(ckpt["config"], dict):
        raise bad(f"config is {kind_of(ckpt['config'])}, expected a dict")
    for key, expected in schema.items():
        if key not in ckpt:
            raise bad(f"key {key!r} missing")
        if not isinstance(ckpt[key], expected):
            raise bad(f"key {key!r} is {kind_of(ckpt[key])}, expected {_type_names(expected)}")
    return ckpt


# What torch.load(weights_only=True) reads back (checked at save time: an unreadable checkpoint
# would only show when the run resumes, hours later).
_SAFE_LEAVES = (str, bytes, int, float, complex, bool, type(None), torch.Size, torch.dtype, torch.device,
                torch.layout, torch.memory_format)


def check_weights_only(obj: Any, where: str = "state") -> None:
    """Raise TypeError naming the first value that torch.load(weights_only=True) would refuse."""
    if isinstance(obj, torch.Tensor) or type(obj) in _SAFE_LEAVES:
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            check_weights_only(key, f"{where} key")
            check_weights_only(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple, set, frozenset):
        for i, value in enumerate(obj):
            check_weights_only(value, f"{where}[{i}]")
        return
    raise TypeError(f"checkpoint {where} is {type(obj).__module__}.{type(obj).__qualname__}: "
                    "torch.load(weights_only=True) could not read it back; store plain values or tensors")
