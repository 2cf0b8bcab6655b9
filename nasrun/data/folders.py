"""Image datasets stored as a class-per-folder tree (ImageNet), decoded from files on demand.

Layout (what ``torchvision.datasets.ImageFolder`` reads, and what the DARTS ImageNet scripts use)::

    <dataset.root>/train/<class>/<image>     e.g. train/n01440764/n01440764_10026.JPEG
    <dataset.root>/val/<class>/<image>       the same class folder names as train/

Classes are the sorted folder names of ``train/`` (label = position in that list). Such a set is too
large to keep in memory, so a :class:`FolderSet` holds only the file list; images are decoded and
augmented in DataLoader workers (``dataset.loader=torch``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from nasrun.data.files import open_regular
from nasrun.errors import DataError

# The augmentations a folder dataset understands (the DARTS ImageNet training transform).
FOLDER_AUGMENTATIONS = ("resized_crop", "flip", "color_jitter")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_URL = "https://image-net.org/download.php"


def imagenet_layout() -> str:
    return (
        "<dataset.root>/train/<class>/<image> and <dataset.root>/val/<class>/<image>, one sub-folder per class "
        "with the same class folder names in both (torchvision's ImageFolder layout)"
    )


def _how_to_get() -> str:
    return (
        f"ImageNet cannot be downloaded by nasrun: get ILSVRC2012 (train and validation images) from {IMAGENET_URL}, "
        "sort the validation images into class folders (as torchvision's ImageNet or the usual valprep.sh does), "
        "and pass dataset.root=DIR"
    )


class FolderSet:
    """A labelled list of image files, with the settings needed to decode and batch them.

    Args:
        samples: ``(path, label)`` pairs.
        classes: class names; label ``k`` is ``classes[k]``.
        image_size: side of the square images the transforms produce.
        root: the folder the samples were listed from (for messages and the run record).
        workers: DataLoader worker processes used to decode (also for evaluation).
        pin_memory: pin host batches when the run's device is CUDA.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], image_size: int, root: Path,
                 workers: int = 2, pin_memory: bool = True) -> None:
        self.samples = list(samples)
        self.classes = list(classes)
        self.image_size = int(image_size)
        self.root = Path(root)
        self.workers = int(workers)
        self.pin_memory = bool(pin_memory)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one transformed image: RGB at ``image_size``."""
        return 3, self.image_size, self.image_size

    def subset(self, indices: Tensor | np.ndarray | Sequence[int]) -> "FolderSet":
        """The samples at ``indices``, in that order (a new list; files are not touched)."""
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        return FolderSet([self.samples[i] for i in idx], self.classes, self.image_size, self.root, self.workers,
                         self.pin_memory)

    def load(self, i: int) -> tuple[Any, int]:
        """Decode sample ``i`` as an RGB PIL image; a file that cannot be decoded raises :class:`DataError`."""
        from PIL import Image

        path, label = self.samples[i]
        try:
            with open_regular(path) as f:
                image = Image.open(f)
                image = image.convert("RGB")  # forces the full decode while the file is open
        except Exception as exc:
            text = str(exc).strip().splitlines()
            detail = "not a recognised image format" if type(exc).__name__ == "UnidentifiedImageError" else (
                f"{type(exc).__name__}: {text[0] if text else 'no detail'}")
            raise DataError(
                f"image file {path} cannot be read ({detail}); "
                f"replace it with a good copy or delete it (expected layout: {imagenet_layout()})"
            ) from None
        return image, label


def _list_images(folder: Path) -> list[str]:
    """The image files under ``folder`` in ``os.walk`` order with sorted names (ImageFolder's order), links
    followed. Something else with an image's name (a pipe, a device, a broken link) is refused here: a
    DataLoader worker opening a pipe would wait forever."""
    found: list[str] = []
    stack = [str(folder)]
    while stack:
        where = stack.pop()
        try:
            with os.scandir(where) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            raise DataError(f"image folder {where} cannot be listed ({exc.strerror or exc}); expected layout: "
                            f"{imagenet_layout()}") from None
        subfolders = []
        for entry in entries:
            if entry.is_dir():
                subfolders.append(entry.path)
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                if not entry.is_file():
                    raise DataError(f"image file {entry.path} is not a regular file (a pipe, a device, a socket or "
                                    f"a broken link); replace it with an image or delete it (expected layout: "
                                    f"{imagenet_layout()})")
                found.append(entry.path)
        stack.extend(reversed(subfolders))
    return found


def _class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def scan_split(folder: Path, classes: Sequence[str]) -> list[tuple[str, int]]:
    """``(path, label)`` for every image under ``folder/<class>`` of the given classes (sorted, like ImageFolder)."""
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        files = _list_images(folder / name)
        if not files:
            raise DataError(
                f"class folder {folder / name} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)}): "
                f"every class needs images; expected layout: {imagenet_layout()}"
            )
        samples.extend((path, label) for path in files)
    return samples


def load_imagenet(cfg: Any) -> tuple[FolderSet, FolderSet, int, dict]:
    """The train/ and val/ trees under ``dataset.root``; with ``dataset.subset_classes=K`` only the first K classes are listed."""
    root = Path(str(cfg.root or ".")).expanduser().absolute()
    train_dir, val_dir = root / "train", root / "val"
    missing = [str(d) for d in (train_dir, val_dir) if not d.is_dir()]
    if missing:
        raise DataError(
            f"ImageNet not found: {' and '.join(missing)} {'is not a folder' if len(missing) == 1 else 'are not folders'}. "
            f"Expected layout: {imagenet_layout()}. {_how_to_get()}"
        )
    all_classes = _class_folders(train_dir)
    if not all_classes:
        raise DataError(f"ImageNet folder {train_dir} has no class sub-folders. Expected layout: {imagenet_layout()}")
    k = cfg.subset_classes or len(all_classes)
    if k > len(all_classes):
        raise DataError(
            f"dataset.subset_classes={k} is more than the {len(all_classes)} class folders in {train_dir}"
        )
    classes = all_classes[:k]
    val_classes = set(_class_folders(val_dir))
    absent = [name for name in classes if name not in val_classes]
    if absent:
        raise DataError(
            f"ImageNet folder {val_dir} lacks the class folder(s) {', '.join(absent[:5])}"
            f"{' ...' if len(absent) > 5 else ''} found in {train_dir}: both need the same class folders "
            f"(expected layout: {imagenet_layout()})"
        )
    settings = dict(image_size=cfg.image_size, workers=cfg.workers, pin_memory=cfg.pin_memory)
    train = FolderSet(scan_split(train_dir, classes), classes, root=train_dir, **settings)
    test = FolderSet(scan_split(val_dir, classes), classes, root=val_dir, **settings)
    info = {"source": str(root), "splits": {"train": "train/", "test": "val/"}, "class_folders": len(all_classes),
            "first_classes": classes[:5]}
    return train, test, len(all_classes), info


__all__ = ["FolderSet", "FOLDER_AUGMENTATIONS", "IMAGE_EXTENSIONS", "load_imagenet", "scan_split", "imagenet_layout"]
