"""Datasets, the seeded search split and subsets, and the two input pipelines.

``dataset.loader=device``: :class:`BatchStream` keeps the uint8 images on the run's device and
augments whole batches there. ``dataset.loader=torch``: :class:`TorchStream`, a DataLoader with
workers and per-image torchvision transforms (the only path for ImageNet). :func:`make_stream`
builds either; both resume exactly from their ``state_dict``.

The names resolve on first use (PEP 562), so checking a config against :data:`nasrun.data.names.DATASET_NAMES`
does not import torch.
"""

from importlib import import_module
from typing import Any

_FROM = {
    "cutout": "augment", "normalize": "augment", "random_crop": "augment", "random_flip": "augment",
    "to_unit_float": "augment",
    "DataBundle": "datasets", "ImageSet": "datasets", "channel_stats": "datasets", "first_classes": "datasets",
    "index_hash": "datasets", "per_class_subset": "datasets", "search_split": "datasets",
    "stratified_split": "datasets",
    "FolderSet": "folders",
    "load_dataset": "load", "shared_loads": "load",
    "LOADERS": "loaders", "TorchStream": "loaders", "eval_batches": "loaders", "make_stream": "loaders",
    "BatchStream": "streams", "pass_order": "streams",
    "DATASET_NAMES": "names",
}


def __getattr__(name: str) -> Any:
    if name in _FROM:
        return getattr(import_module(f"nasrun.data.{_FROM[name]}"), name)
    raise AttributeError(f"module 'nasrun.data' has no attribute {name!r}")


__all__ = sorted(_FROM)
