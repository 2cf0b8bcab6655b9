"""Loading image datasets, the seeded splits and subsets nasrun records.

Every loader returns a :class:`DataBundle`: the train and test sets, the per-channel
normalisation constants and an ``info`` dict that ``result.json`` stores so a run says exactly
which data it saw. In-memory datasets are :class:`ImageSet` (uint8 images in (N, C, H, W) layout,
int64 labels); ImageNet is a :class:`nasrun.data.folders.FolderSet` (a file list decoded on demand).

Supported sources (``dataset.name``):

``digits``
    scikit-learn's bundled 8x8 digits (1,797 images, 10 classes, values 0..16). It has no official
    test set, so a seeded, per-class (stratified) split is made here.
``synthetic``
    Random but learnable images (a per-class low-frequency pattern plus noise), for tests and smoke
    runs with any shape.
``cifar10``, ``cifar100``, ``svhn``, ``fashion_mnist``
    The published files under ``dataset.root`` (see :mod:`nasrun.data.formats`); Fashion-MNIST is
    also found where Debian's ``dataset-fashion-mnist`` package installs it.
``imagenet``
    A ``train/`` and ``val/`` class-per-folder tree under ``dataset.root`` (see :mod:`nasrun.data.folders`).

``dataset.subset_classes`` (first K classes) and ``dataset.subset`` (a fraction or a count of each
class, seeded by ``dataset.split_seed``) shrink any of them, train and test alike.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from torch import Tensor

from nasrun.errors import DataError

if TYPE_CHECKING:
    from nasrun.data.folders import FolderSet

log = logging.getLogger(__name__)

@dataclass
class ImageSet:
    """A labelled set of images held in memory.

    ``images`` is (N, C, H, W), normally uint8 in 0..255 (float in [0, 1] is also accepted by the
    streams); ``labels`` is int64 of shape (N,).
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"ImageSet.images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"ImageSet.labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: Tensor) -> "ImageSet":
        """The images at ``indices`` (a copy), in that order."""
        idx = indices.to(device=self.images.device, dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx.to(self.labels.device)])

    def to(self, device: str | torch.device) -> "ImageSet":
        """The same set on ``device`` (no copy when it is already there)."""
        return ImageSet(self.images.to(device), self.labels.to(device))


@dataclass
class DataBundle:
    """What :func:`load_dataset` returns: both splits, normalisation and a record for result.json."""

    train: Union[ImageSet, "FolderSet"]
    test: Union[ImageSet, "FolderSet"]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- splits and hashes


def search_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split ``range(n)`` into the search-train (weights) and search-val (alpha) halves.

    A permutation of ``range(n)`` is drawn from a CPU ``torch.Generator`` seeded with ``seed``;
    its first ``round(fraction * n)`` entries form the search-train part and the rest the
    search-val part. Each part is returned sorted (int64, CPU): the streams shuffle anyway, and a
    sorted index list hashes the same however it is later consumed. Raises :class:`DataError` when
    either part would be empty.
    """
    if not 0 < fraction < 1:
        raise DataError(f"dataset.search_split={fraction!r} is not allowed: must be in (0, 1)")
    k = round(fraction * n)
    if k <= 0 or k >= n:
        raise DataError(
            f"dataset.search_split={fraction} leaves an empty part when splitting {n} training images "
            f"({k} for weights, {n - k} for alpha): use more images or a fraction closer to 0.5"
        )
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    return perm[:k].sort().values, perm[k:].sort().values


def index_hash(idx: Tensor) -> str:
    """A short fingerprint of an index list: first 16 hex digits of sha256 over its int64 bytes.

    Order matters (``[1, 2]`` and ``[2, 1]`` differ); :func:`search_split` returns sorted parts.
    """
    arr = idx.detach().to(device="cpu", dtype=torch.int64).contiguous().numpy()
    return hashlib.sha256(arr.astype("<i8", copy=False).tobytes()).hexdigest()[:16]


def first_classes(data: Any, k: int) -> Any:
    """The images of ``data`` whose label is below ``k`` (the first ``k`` classes), in their order."""
    keep = torch.nonzero(data.labels < k).flatten()
    return data if len(keep) == len(data) else data.subset(keep)


def per_class_subset(labels: Tensor | np.ndarray, amount: float | int, seed: Any) -> np.ndarray:
    """Seeded per-class selection for ``dataset.subset``; sorted int64 indices.

    A float ``amount`` in (0, 1] keeps ``round(amount * n_c)`` images of each class (at least one);
    an int keeps ``min(amount, n_c)``. ``seed`` is anything :func:`numpy.random.default_rng` accepts.
    """
    y = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise DataError(f"dataset.subset={amount!r} is not allowed: a fraction in (0, 1] or a count per class >= 1")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = max(1, round(amount * members.size)) if isinstance(amount, float) else min(int(amount), members.size)
        chosen.append(members[rng.permutation(members.size)[:k]])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of images scaled to [0, 1]."""
    x = images.to(torch.float64)
    if images.dtype == torch.uint8:
        x = x / 255.0
    x = x.transpose(0, 1).reshape(x.shape[1], -1)
    mean = x.mean(dim=1)
    std = x.std(dim=1, correction=0)
    return tuple(mean.tolist()), tuple(std.tolist())


def _check_matches_config(cfg: Any, train: ImageSet, num_classes: int) -> None:
    c, h, w = train.image_shape
    what = f"dataset {cfg.name!r}"
    if c != cfg.in_channels:
        raise DataError(
            f"dataset.in_channels={cfg.in_channels} does not match {what}, whose images have {c} channel(s): "
            f"set dataset.in_channels={c}"
        )
    if h != w or h != cfg.image_size:
        raise DataError(
            f"dataset.image_size={cfg.image_size} does not match {what}, whose images are {h}x{w}: "
            f"set dataset.image_size={h}"
        )
    if num_classes != cfg.num_classes:
        raise DataError(
            f"dataset.num_classes={cfg.num_classes} does not match {what}, which has {num_classes} classes: "
            f"set dataset.num_classes={num_classes}"
        )


# --------------------------------------------------------------------------- digits


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: ``round(test_fraction * n_c)`` images of each class go to the test part.

    Returns sorted (train_indices, test_indices) as int64 numpy arrays.
    """
    rng = np.random.default_rng(int(seed))
    train_parts, test_parts = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(members.size)]
        k = round(test_fraction * members.size)
        test_parts.append(members[:k])
        train_parts.append(members[k:])
    train_idx = np.sort(np.concatenate(train_parts)).astype(np.int64)
    test_idx = np.sort(np.concatenate(test_parts)).astype(np.int64)
    return train_idx, test_idx


def load_digits(cfg: Any) -> tuple[ImageSet, ImageSet, int, dict]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise DataError(f"dataset.name=digits needs scikit-learn, which cannot be imported ({exc})") from None
    x, y = load_digits(return_X_y=True)
    # 4-bit values 0..16 -> 0..255 so every dataset is uint8 with the same /255 scaling.
    images = np.rint(x * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = y.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, cfg.test_fraction, cfg.split_seed)
    if train_idx.size == 0 or test_idx.size == 0:
        raise DataError(f"dataset.test_fraction={cfg.test_fraction} leaves an empty digits split")
    train = ImageSet(torch.from_numpy(images[train_idx]), torch.from_numpy(labels[train_idx]))
    test = ImageSet(torch.from_numpy(images[test_idx]), torch.from_numpy(labels[test_idx]))
    info = {
        "source": "sklearn.datasets.load_digits",
        "split": "stratified",
        "split_seed": int(cfg.split_seed),
        "test_fraction": float(cfg.test_fraction),
        "test_index_hash": index_hash(torch.from_numpy(test_idx)),
    }
    return train, test, 10, info


# --------------------------------------------------------------------------- synthetic


def load_synthetic(cfg: Any) -> tuple[ImageSet, ImageSet, int, dict]:
    c, s, k = cfg.in_channels, cfg.image_size, cfg.num_classes
    gen = torch.Generator(device="cpu").manual_seed(int(cfg.split_seed))
    # One smooth pattern per class: a coarse random grid upsampled to the image size.
    coarse = min(4, s)
    patterns = torch.rand(k, c, coarse, coarse, generator=gen)
    patterns = torch.nn.functional.interpolate(patterns, size=(s, s), mode="bilinear", align_corners=False)

    def make(n: int) -> ImageSet:
        labels = (torch.arange(n) % k)[torch.randperm(n, generator=gen)]
        noise = torch.randn(n, c, s, s, generator=gen)
        x = 0.25 + 0.5 * patterns[labels] + 0.15 * noise
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return ImageSet(images, labels.to(torch.int64))

    train = make(cfg.num_train)
    test = make(cfg.num_test)
    info = {"source": "synthetic", "split_seed": int(cfg.split_seed)}
    return train, test, k, info


__all__ = [
    "ImageSet",
    "DataBundle",
    "per_class_subset",
    "first_classes",
    "search_split",
    "index_hash",
    "stratified_split",
    "channel_stats",
]
