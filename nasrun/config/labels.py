"""Short, file-system-safe names for run and sweep-job folders (Hydra resolvers in the primary configs)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

#: Groups whose keys are shown by their last part in job names (``estimator.eta=0.1`` -> ``eta-0.1``).
_SHORT_KEY_GROUPS = ("method.", "estimator.", "perturbation.", "alpha_map.", "schedule.")


def genotype_label(spec: str) -> str:
    """A short name for a genotype argument: a published name, or the last part of a path."""
    path = Path(str(spec))
    if path.name == "genotype.json":
        path = path.parent
    name = path.stem if path.suffix == ".json" else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:60] or "genotype"


def job_label(override_dirname: str) -> str:
    """A sweep job's folder name from its overrides: `estimator.eta=0.1,seed=0` -> `eta-0.1_seed-0`."""
    parts = []
    for item in override_dirname.split(","):
        if not item:
            continue
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key.startswith(_SHORT_KEY_GROUPS):
            key = key.split(".")[-1]
        if "/" in value or value.endswith(".json"):
            value = genotype_label(value)  # a path: its last part
        parts.append(f"{key}-{value}" if value else key)
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", "_".join(parts))[:120] or "default"


def unique_id() -> str:
    """A short random id (cached per composed config, so one sweep gets one id)."""
    return secrets.token_hex(3)
