"""Datasets, the seeded search split and subsets, and the two input pipelines.

``dataset.loader=device``: :class:`BatchStream` keeps the uint8 images on the run's device and
augments whole batches there. ``dataset.loader=torch``: :class:`TorchStream`, a DataLoader with
workers and per-image torchvision transforms (the only path for ImageNet). :func:`make_stream`
builds either; both resume exactly from their ``state_dict``.
"""

from nasrun.data.augment import cutout, normalize, random_crop, random_flip, to_unit_float
from nasrun.data.datasets import (
    DataBundle,
    ImageSet,
    channel_stats,
    first_classes,
    index_hash,
    per_class_subset,
    search_split,
    stratified_split,
)
from nasrun.data.folders import FolderSet
from nasrun.data.load import load_dataset
from nasrun.data.loaders import LOADERS, TorchStream, eval_batches, make_stream
from nasrun.data.streams import BatchStream, pass_order

__all__ = [
    "BatchStream",
    "DataBundle",
    "FolderSet",
    "ImageSet",
    "LOADERS",
    "TorchStream",
    "channel_stats",
    "cutout",
    "eval_batches",
    "first_classes",
    "index_hash",
    "load_dataset",
    "make_stream",
    "normalize",
    "pass_order",
    "per_class_subset",
    "random_crop",
    "random_flip",
    "search_split",
    "stratified_split",
    "to_unit_float",
]
