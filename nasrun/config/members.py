"""Which jobs of a sweep can be members of one population: those whose configs differ only in member keys.

A member key changes no shape and no data: the seed, the estimator's eta and finite-difference radius,
the optimisers' rates, momenta, decays and clips, the perturbation's radius, and what is printed.
Jobs that differ in anything else (space, method, supernet size, batch size, dataset, device,
precision, ...) form separate populations. A pipeline's retraining (``recipe.*``) runs after the
population, job by job, so its keys are member keys of a pipeline too.
"""

from __future__ import annotations

import json
from typing import Any

#: Keys whose values may differ between the members of one population.
MEMBER_KEYS = (
    "seed",
    "estimator.eta",
    "estimator.fd_radius",
    "search.lr",
    "search.lr_min",
    "search.momentum",
    "search.weight_decay",
    "search.grad_clip",
    "search.arch_lr",
    "search.arch_betas",
    "search.arch_weight_decay",
    "search.arch_grad_clip",
    "perturbation.epsilon",
    "perturbation.epsilon_start",
    "progress",
)
#: Further member keys of ``nasrun pipeline`` (its retraining runs per job after the population).
PIPELINE_MEMBER_PREFIXES = ("recipe.",)


#: How a population's members train (``hydra.launcher.engine``): in turns, or stacked in one network.
ENGINES = ("turns", "stacked")

def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a.b": value}``."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def shape_key(config: dict, command: str) -> str:
    """What members of one population share: the config without its member keys, as text."""
    prefixes = PIPELINE_MEMBER_PREFIXES if command == "pipeline" else ()
    shared = {key: value for key, value in flat(config).items()
              if key not in MEMBER_KEYS and not key.startswith(prefixes)}
    return json.dumps(shared, sort_keys=True, default=str)


def group_jobs(configs: list[dict], command: str, max_members: int) -> list[list[int]]:
    """The jobs (by index) of each population, in the sweep's order; at most ``max_members`` per population."""
    groups: dict[str, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(shape_key(config, command), []).append(index)
    return [indices[start:start + max_members] for indices in groups.values()
            for start in range(0, len(indices), max_members)]


def member_label(config: dict, others: list[dict]) -> str:
    """The member keys in which ``config`` differs from the rest of its population (``seed=1 estimator.eta=0.5``)."""
    mine = flat(config)
    varying = [key for key in MEMBER_KEYS if any(flat(o).get(key) != mine.get(key) for o in others)]
    return " ".join(f"{key}={mine.get(key)}" for key in varying) or f"seed={mine.get('seed')}"


__all__ = ["MEMBER_KEYS", "PIPELINE_MEMBER_PREFIXES", "group_jobs", "member_label", "shape_key"]
