"""The one entry point that turns a dataset config into images: the loader of each dataset, subsets, normalisation.

Kept apart from ``datasets`` (the in-memory image sets and splits) so that the file formats can
build on those without the two importing each other.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from nasrun.data import folders, formats
from nasrun.data.datasets import (
    DataBundle,
    ImageSet,
    _check_matches_config,
    channel_stats,
    first_classes,
    index_hash,
    load_digits,
    load_synthetic,
    per_class_subset,
)
from nasrun.data.names import DATASET_NAMES
from nasrun.errors import DataError


def _loaders() -> dict[str, Callable]:
    """The loader of every name in :data:`~nasrun.data.names.DATASET_NAMES` (a test keeps the two equal)."""
    return {
        "digits": load_digits,
        "synthetic": load_synthetic,
        "cifar10": formats.load_cifar10,
        "cifar100": formats.load_cifar100,
        "svhn": formats.load_svhn,
        "fashion_mnist": formats.load_fashion_mnist,
        "imagenet": folders.load_imagenet,
    }


def _first_classes(cfg: Any, train, test, num_classes: int, info: dict) -> tuple[Any, Any, int, dict]:
    """``dataset.subset_classes``: keep the first k classes. Returns train, test, the class count and the record."""
    k = getattr(cfg, "subset_classes", None)
    if k is None:
        return train, test, num_classes, {}
    if k > num_classes:
        raise DataError(f"dataset.subset_classes={k} is more than the {num_classes} classes of dataset {cfg.name!r}")
    if "class_names" in info:
        info["class_names"] = info["class_names"][:k]
    return first_classes(train, k), first_classes(test, k), int(k), {"subset_classes": int(k)}


def _per_class_subset(cfg: Any, train, test) -> tuple[Any, Any, dict]:
    """``dataset.subset``: a seeded count or fraction of every class. Returns train, test and the record."""
    amount = getattr(cfg, "subset", None)
    if amount is None:
        return train, test, {}
    full = (len(train), len(test))
    train_idx = per_class_subset(train.labels, amount, (int(cfg.split_seed), 1))
    test_idx = per_class_subset(test.labels, amount, (int(cfg.split_seed), 2))
    train, test = train.subset(torch.from_numpy(train_idx)), test.subset(torch.from_numpy(test_idx))
    record = {
        "amount": amount,
        "per_class": "fraction" if isinstance(amount, float) else "count",
        "seed": int(cfg.split_seed),
        "num_train_full": full[0],
        "num_test_full": full[1],
        "train_index_hash": index_hash(torch.from_numpy(train_idx)),
        "test_index_hash": index_hash(torch.from_numpy(test_idx)),
    }
    return train, test, {"subset": record}


def _normalisation(cfg: Any, train) -> tuple[tuple[float, ...], tuple[float, ...], dict[str, bool]]:
    """Per-channel mean and std: from the config, or computed on the training images when not set."""
    if cfg.mean is None or cfg.std is None:
        if not isinstance(train, ImageSet):
            raise DataError(
                f"dataset {cfg.name!r} is read from files on demand, so its mean and std cannot be computed: "
                "set dataset.mean and dataset.std"
            )
        mean_c, std_c = channel_stats(train.images)
    computed = {"mean": cfg.mean is None, "std": cfg.std is None}
    mean = tuple(float(v) for v in (mean_c if cfg.mean is None else cfg.mean))
    std = tuple(float(v) for v in (std_c if cfg.std is None else cfg.std))
    if any(s <= 0 for s in std):
        raise DataError(
            f"the computed per-channel std of dataset {cfg.name!r} is {list(std)}: a channel is constant; "
            "set dataset.std explicitly"
        )
    return mean, std, computed


#: Bundles already loaded, by their config's text, inside :func:`shared_loads` (None outside it).
_SHARED: dict[str, DataBundle] | None = None


@contextmanager
def shared_loads() -> Iterator[None]:
    """Within the block, one load per dataset config: the members of a population read one copy.

    A bundle is never written to after it is loaded (streams and evaluation index it), so sharing it
    changes no member's numbers.
    """
    global _SHARED
    outer, _SHARED = _SHARED, ({} if _SHARED is None else _SHARED)
    try:
        yield
    finally:
        _SHARED = outer


def load_dataset(cfg: Any) -> DataBundle:
    """Load the dataset described by a :class:`nasrun.config.schema.DatasetConf` (once per config inside
    :func:`shared_loads`).

    Raises :class:`DataError` (one line, naming the path or config key to change) when the files are
    missing or unreadable, or when the data does not match ``dataset.in_channels``,
    ``dataset.image_size`` or ``dataset.num_classes``.
    """
    if _SHARED is not None:
        key = repr(cfg)
        if key not in _SHARED:
            _SHARED[key] = _load(cfg)
        return _SHARED[key]
    return _load(cfg)


def _load(cfg: Any) -> DataBundle:
    loaders = _loaders()
    if cfg.name not in loaders:
        raise DataError(f"dataset.name={cfg.name!r} is not allowed: one of {', '.join(DATASET_NAMES)}")
    train, test, num_classes, info = loaders[cfg.name](cfg)
    train, test, num_classes, classes_record = _first_classes(cfg, train, test, num_classes, info)
    train, test, subset_record = _per_class_subset(cfg, train, test)
    _check_matches_config(cfg, train, num_classes)
    mean, std, computed = _normalisation(cfg, train)
    record = {
        "name": cfg.name,
        "num_train": len(train),
        "num_test": len(test),
        "image_shape": list(train.image_shape),
        "num_classes": num_classes,
        "mean": list(mean),
        "std": list(std),
        "mean_computed": computed["mean"],
        "std_computed": computed["std"],
        "loader": getattr(cfg, "loader", "device"),
    }
    record.update(info)
    record.update(classes_record)
    record.update(subset_record)
    return DataBundle(train=train, test=test, mean=mean, std=std, info=record)
