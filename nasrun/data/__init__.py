"""Datasets, the seeded search split, GPU-resident augmentation and resumable batch streams."""

from nasrun.data.augment import cutout, normalize, random_crop, random_flip, to_unit_float
from nasrun.data.datasets import (
    DataBundle,
    ImageSet,
    channel_stats,
    index_hash,
    load_dataset,
    search_split,
    stratified_split,
)
from nasrun.data.streams import BatchStream, eval_batches

__all__ = [
    "BatchStream",
    "DataBundle",
    "ImageSet",
    "channel_stats",
    "cutout",
    "eval_batches",
    "index_hash",
    "load_dataset",
    "normalize",
    "random_crop",
    "random_flip",
    "search_split",
    "stratified_split",
    "to_unit_float",
]
