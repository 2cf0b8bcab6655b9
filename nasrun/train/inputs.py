"""What a retraining takes before it starts: the genotype, the search run it came from, and from that run the
dataset, the space and (with ``recipe.unify``) the training settings; the cell count of a per-position genotype
as the default ``recipe.layers``. Reads no images and builds no network.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from nasrun.config.schema import DatasetConf, NasrunConf, SpaceConf
from nasrun.errors import ConfigError, NasrunError
from nasrun.genotype.genotype import Genotype, resolve_genotype
from nasrun.run.folder import read_result, read_saved_config


def saved_search_config(run_folder: Path | None) -> dict | None:
    """The config a search run used (from its result.json, else its .hydra/config.yaml); a damaged file is
    one RunFolderError naming it."""
    if run_folder is None:
        return None
    config = (read_result(run_folder) or {}).get("config")
    return config or read_saved_config(run_folder) or None


def _saved_node(run_folder: Path | None, key: str, schema: type) -> Any:
    """``schema(**node)`` of the search config's ``key`` (None without one); a node that is no such config is
    one ConfigError naming the folder and the key."""
    node = (saved_search_config(run_folder) or {}).get(key)
    if not node:
        return None
    try:
        if not isinstance(node, dict):
            raise TypeError(f"it is {type(node).__name__}, not a mapping")
        return schema(**node)
    except (NasrunError, TypeError, ValueError) as exc:
        raise ConfigError(f"{run_folder}: the search's saved config has a bad {key} ({exc})") from None


def searched_space(run_folder: Path | None) -> SpaceConf | None:
    """The space a search run searched in (recorded with the retraining, and read by ``nasrun show``)."""
    return _saved_node(run_folder, "space", SpaceConf)


def genotype_space(genotype: Genotype, run_folder: Path | None) -> SpaceConf | None:
    """The space a genotype was searched in: its search run's config, else the description it carries."""
    saved = searched_space(run_folder)
    if saved is not None or genotype.space_description is None:
        return saved
    return SpaceConf(**genotype.space_description)


def search_dataset(run_folder: Path | None) -> DatasetConf | None:
    """The dataset config a search run used, if the genotype came from one."""
    return _saved_node(run_folder, "dataset", DatasetConf)


def layers_named(overrides: Sequence[str]) -> bool:
    """Whether command-line overrides set ``recipe.layers`` (``recipe.layers=``, ``+``/``++``; not ``~``)."""
    return any(o.lstrip("+").split("=", 1)[0].strip() == "recipe.layers" for o in overrides if "=" in o)


def _layers_in_this_job() -> bool:
    """``recipe.layers`` on the command line of the Hydra job running now (False outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return layers_named(list(HydraConfig.get().overrides.task))


def cells_for(genotype: Genotype, cfg: NasrunConf, layers_given: Optional[bool] = None) -> NasrunConf:
    """A per-position genotype has a cell for each of N positions: N is the default ``recipe.layers``.

    ``layers_given``: whether the command line set ``recipe.layers`` (None: read the running Hydra job's
    overrides); a value given there that is not N is refused, since the network would not be the genotype's.
    """
    cells = len(genotype.cells)
    if genotype.shared or cfg.recipe.layers == cells:
        return cfg
    if layers_given if layers_given is not None else _layers_in_this_job():
        raise ConfigError(f"recipe.layers={cfg.recipe.layers} is not allowed: the genotype has its own cell for each "
                          f"of {cells} positions; leave recipe.layers out or set recipe.layers={cells}")
    return replace(cfg, recipe=replace(cfg.recipe, layers=cells))


def resolve_inputs(cfg: NasrunConf) -> tuple[Genotype, Path | None, DatasetConf]:
    """Genotype, the search run folder it came from (if any), and the dataset to retrain on.

    Without ``dataset=``: the search's dataset, else CIFAR-10; with ``recipe.network=imagenet`` the
    search's dataset only if it was ImageNet, else ``dataset=imagenet`` (a CIFAR-searched cell retrained
    on ImageNet is the transfer the recipe is for). Reads no images.
    """
    if not cfg.genotype:
        raise ConfigError("genotype is required: a published name (e.g. DARTS_V2), a genotype.json or a search run folder")
    genotype, run_folder = resolve_genotype(cfg.genotype)
    if cfg.dataset is not None:
        return genotype, run_folder, cfg.dataset
    searched = search_dataset(run_folder)
    if cfg.recipe.network == "imagenet":
        return genotype, run_folder, searched if searched and searched.name == "imagenet" else imagenet_dataset()
    return genotype, run_folder, searched or DatasetConf()


def imagenet_dataset() -> DatasetConf:
    """The shipped ``dataset=imagenet`` config (224x224, 1000 classes), as ``dataset=imagenet`` would give it."""
    import nasrun.conf

    node = OmegaConf.load(Path(nasrun.conf.__file__).parent / "dataset" / "imagenet.yaml")
    return DatasetConf(**OmegaConf.to_container(node, resolve=True))


# recipe key <- search key: the training settings a unified retraining takes from its search run.
UNIFIED_KEYS = {
    "lr": "lr",
    "lr_min": "lr_min",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "batch_size": "batch_size",
    "grad_clip": "grad_clip",
}


def unify_recipe(cfg: NasrunConf, run_folder: Path | None) -> tuple[NasrunConf, dict | None]:
    """With recipe.unify, copy the search run's training settings into the recipe.

    Taken from the search: SGD with its momentum and weight decay, batch size, cosine schedule (start
    and floor), gradient clipping, and augmentation (the search's train_augment and crop padding, and
    no cutout, since the search used none). Kept from the recipe: network size (C, cells), epochs,
    auxiliary head and drop path. Returns the new config and what came from the search.
    """
    if not cfg.recipe.unify:
        return cfg, None
    if run_folder is None:
        raise ConfigError(f"recipe.unify=true needs genotype=<search run folder>, got genotype={cfg.genotype!r}")
    saved = saved_search_config(run_folder)
    if not saved or "search" not in saved:
        raise ConfigError(f"recipe.unify=true: {run_folder} has no saved search config (result.json or .hydra)")
    search = saved["search"]
    unified = {f"recipe.{key}": search[src] for key, src in UNIFIED_KEYS.items()}
    unified["recipe.cutout"] = 0
    # the search's cosine schedule without warm-up, and its loss without label smoothing
    for key, value in (("schedule", "cosine"), ("warmup_epochs", 0), ("label_smoothing", 0.0)):
        if getattr(cfg.recipe, key) != value:
            unified[f"recipe.{key}"] = value
    recipe = replace(cfg.recipe, **{k.split(".", 1)[1]: v for k, v in unified.items()})
    dataset = cfg.dataset
    search_data = saved.get("dataset") or {}
    if dataset is not None and search_data:
        aug = {"train_augment": search_data.get("train_augment", dataset.train_augment),
               "crop_padding": search_data.get("crop_padding", dataset.crop_padding)}
        dataset = replace(dataset, **aug)
        unified.update({f"dataset.{k}": v for k, v in aug.items()})
    unified["optimizer"] = "SGD (as in the search)"
    unified["schedule"] = "cosine (as in the search)"
    return replace(cfg, recipe=recipe, dataset=dataset), unified
