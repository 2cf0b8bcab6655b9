"""Loading image datasets into memory as uint8 tensors, and the seeded splits nasrun records.

Every loader returns a :class:`DataBundle`: the train and test :class:`ImageSet` (uint8 images in
(N, C, H, W) layout, int64 labels), the per-channel normalisation constants and an ``info`` dict
that ``result.json`` stores so a run says exactly which data it saw.

Supported sources (``dataset.name``):

``digits``
    scikit-learn's bundled 8x8 digits (1,797 images, 10 classes, values 0..16). It has no official
    test set, so a seeded, per-class (stratified) split is made here.
``synthetic``
    Random but learnable images (a per-class low-frequency pattern plus noise), for tests and smoke
    runs with any shape.
``cifar10``
    The CIFAR-10 python pickles under ``<root>/cifar-10-batches-py``. The files are read by a small
    reader of the published pickle format (restricted to numpy array reconstruction) rather than
    through ``torchvision.datasets.CIFAR10``, whose md5 check rejects any file that is not the
    official one; torchvision is only used to download. The md5 sums are still checked and the
    outcome is recorded in ``info["md5_verified"]``.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nasrun.errors import DataError

log = logging.getLogger(__name__)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_META_FILE = "batches.meta"
CIFAR10_ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_PAGE_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
# md5 sums of the official files (the same list torchvision checks against).
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


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

    train: ImageSet
    test: ImageSet
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


# --------------------------------------------------------------------------- public entry point


def load_dataset(cfg: Any) -> DataBundle:
    """Load the dataset described by a :class:`nasrun.config.DatasetConf`.

    Raises :class:`DataError` (one line, naming the config key to change) when the files are
    missing or unreadable, or when the data does not match ``dataset.in_channels``,
    ``dataset.image_size`` or ``dataset.num_classes``.
    """
    loaders = {"digits": _load_digits, "synthetic": _load_synthetic, "cifar10": _load_cifar10}
    if cfg.name not in loaders:
        raise DataError(f"dataset.name={cfg.name!r} is not allowed: one of {', '.join(loaders)}")
    train, test, num_classes, info = loaders[cfg.name](cfg)
    _check_matches_config(cfg, train, num_classes)

    if cfg.mean is None or cfg.std is None:
        mean_c, std_c = channel_stats(train.images)
    computed = {"mean": cfg.mean is None, "std": cfg.std is None}
    mean = tuple(float(v) for v in (mean_c if cfg.mean is None else cfg.mean))
    std = tuple(float(v) for v in (std_c if cfg.std is None else cfg.std))
    if any(s <= 0 for s in std):
        raise DataError(
            f"the computed per-channel std of dataset {cfg.name!r} is {list(std)}: a channel is constant; "
            "set dataset.std explicitly"
        )

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
    }
    record.update(info)
    return DataBundle(train=train, test=test, mean=mean, std=std, info=record)


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


def _load_digits(cfg: Any) -> tuple[ImageSet, ImageSet, int, dict]:
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


def _load_synthetic(cfg: Any) -> tuple[ImageSet, ImageSet, int, dict]:
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


# --------------------------------------------------------------------------- cifar10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (all the CIFAR pickles contain), never arbitrary objects."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the file")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        obj = _ArrayUnpickler(f, encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict, found {type(obj).__name__}")
    # Files written by Python 2 load with str keys under latin1; Python 3 writers may use bytes keys.
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cifar_missing_message(folder: Path, missing: list[str]) -> str:
    what = f"missing: {', '.join(missing)}" if folder.is_dir() else "the folder does not exist"
    return (
        f"CIFAR-10 not found: looked in {folder} ({what}). "
        f"Expected layout: <dataset.root>/{CIFAR10_FOLDER}/ holding data_batch_1..data_batch_5, test_batch "
        "and batches.meta. To get it, run once with dataset.download=true on a machine with internet access, "
        f"or download cifar-10-python.tar.gz from {CIFAR10_PAGE_URL}, extract it into a folder DIR "
        f"(giving DIR/{CIFAR10_FOLDER}) and pass dataset.root=DIR"
    )


def _download_cifar10(root: Path) -> None:
    try:
        from torchvision.datasets import CIFAR10

        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(root), train=True, download=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"dataset.download=true could not fetch CIFAR-10 from {CIFAR10_ARCHIVE_URL} into {root} ({first}); "
            f"download the archive by hand, extract it so that {root / CIFAR10_FOLDER} exists, "
            "and run with dataset.download=false"
        ) from None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        entry = _read_pickle(path)
        data = np.asarray(entry["data"])
        labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
        labels = np.asarray(labels, dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
        if labels.shape != (data.shape[0],):
            raise ValueError(f"{labels.size} labels for {data.shape[0]} images")
    except Exception as exc:  # truncated pickle, wrong content, unreadable file ...
        raise DataError(
            f"CIFAR-10 file {path} is corrupt or not a CIFAR-10 batch ({type(exc).__name__}: {exc}); "
            "replace it with a fresh copy from cifar-10-python.tar.gz (or delete the folder and use dataset.download=true)"
        ) from None
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(cfg: Any) -> tuple[ImageSet, ImageSet, int, dict]:
    root = Path(cfg.root).expanduser().absolute()
    folder = root / CIFAR10_FOLDER
    wanted = list(CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES) + [CIFAR10_META_FILE]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing and cfg.download:
        _download_cifar10(root)
        missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise DataError(_cifar_missing_message(folder, missing))

    try:
        meta = _read_pickle(folder / CIFAR10_META_FILE)
        class_names = [str(n) for n in meta["label_names"]]
    except Exception as exc:
        raise DataError(
            f"CIFAR-10 file {folder / CIFAR10_META_FILE} is corrupt or not a CIFAR-10 meta file "
            f"({type(exc).__name__}: {exc}); replace it with a fresh copy from cifar-10-python.tar.gz"
        ) from None

    def read(names: tuple[str, ...]) -> ImageSet:
        parts = [_read_cifar_batch(folder / name) for name in names]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        bad = (labels < 0) | (labels >= len(class_names))
        if bad.any():
            raise DataError(
                f"CIFAR-10 files in {folder} hold label {int(labels[bad][0])}, outside the "
                f"{len(class_names)} classes of batches.meta: the files are corrupt"
            )
        return ImageSet(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))

    train = read(CIFAR10_TRAIN_FILES)
    test = read(CIFAR10_TEST_FILES)
    mismatched = [name for name in wanted if _md5(folder / name) != CIFAR10_MD5[name]]
    if mismatched:
        log.warning(
            "CIFAR-10 files in %s differ from the official release (md5 mismatch: %s); using them as they are",
            folder,
            ", ".join(mismatched),
        )
    info = {
        "source": str(folder),
        "md5_verified": not mismatched,
        "class_names": class_names,
    }
    return train, test, len(class_names), info


__all__ = [
    "ImageSet",
    "DataBundle",
    "load_dataset",
    "search_split",
    "index_hash",
    "stratified_split",
    "channel_stats",
]
