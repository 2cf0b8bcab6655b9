"""Readers of the published on-disk formats of the in-memory datasets.

Each ``load_*`` function takes a :class:`nasrun.config.schema.DatasetConf` and returns
``(train, test, num_classes, info)`` with uint8 (N, C, H, W) :class:`ImageSet` parts. Files are
read directly (no torchvision dataset object), so that a missing, truncated or foreign file ends in
one :class:`DataError` line naming the path, the expected layout and how to get the data, and so
that files differing from the official release (md5) are still usable (a warning and
``info["md5_verified"] = False``). torchvision is used only to download.

=================  ===========================================================================
``cifar10``        ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
``cifar100``       ``<root>/cifar-100-python/{train, test, meta}``
``svhn``           ``<root>/{train_32x32.mat, test_32x32.mat}`` (or ``<root>/svhn/``); needs scipy
``fashion_mnist``  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in ``<root>/FashionMNIST/raw``,
                   ``<root>`` or Debian's ``/usr/share/datasets/fashion-mnist``
=================  ===========================================================================
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nasrun.data.datasets import ImageSet
from nasrun.data.files import open_regular
from nasrun.errors import DataError

log = logging.getLogger(__name__)

LoadResult = tuple[ImageSet, ImageSet, int, dict]


def _root(cfg: Any) -> Path:
    return Path(str(cfg.root or ".")).expanduser().absolute()


def _absent(folder: Path, name: str) -> str:
    """How a message names a file that is not there: its name, and why when something else has that name."""
    path = folder / name
    return f"{name} (not a regular file)" if os.path.lexists(path) and not path.is_file() else name


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _download(label: str, url: str, target: Path, fetch: Callable[[], Any], expected: str) -> None:
    """Run a torchvision download; any failure becomes one DataError line."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        fetch()
    except Exception as exc:
        raise DataError(
            f"dataset.download=true could not fetch {label} from {url} into {target} ({_first_line(exc)}); "
            f"download it by hand so that {expected} exists, and run with dataset.download=false"
        ) from None


def _warn_md5(label: str, folder: Path, expected: dict[str, str]) -> bool:
    """Compare md5 sums with the official release; warn (do not fail) on a difference."""
    mismatched = [name for name, md5 in expected.items() if (folder / name).is_file() and _md5(folder / name) != md5]
    if mismatched:
        log.warning("%s files in %s differ from the official release (md5 mismatch: %s); using them as they are",
                    label, folder, ", ".join(mismatched))
    return not mismatched


# --------------------------------------------------------------------------- CIFAR-10 / CIFAR-100


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


def read_pickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys (numpy arrays only; other objects are refused)."""
    with open_regular(path) as f:
        obj = _ArrayUnpickler(f, encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict, found {type(obj).__name__}")
    # Files written by Python 2 load with str keys under latin1; Python 3 writers may use bytes keys.
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


@dataclass(frozen=True)
class CifarFormat:
    """One of the two CIFAR python releases: file names, label keys, md5 sums, where to get it."""

    label: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    archive: str
    md5: dict
    torchvision_class: str

    @property
    def url(self) -> str:
        return f"https://www.cs.toronto.edu/~kriz/{self.archive}"

    @property
    def files(self) -> list[str]:
        return list(self.train_files + self.test_files) + [self.meta_file]


CIFAR10 = CifarFormat(
    label="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    archive="cifar-10-python.tar.gz",
    # md5 sums of the official files (the list torchvision checks against)
    md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    torchvision_class="CIFAR10",
)

CIFAR100 = CifarFormat(
    label="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    archive="cifar-100-python.tar.gz",
    md5={
        "train": "16019d7e3df5f24257cddd4c1c7a4d6b",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    torchvision_class="CIFAR100",
)


def _cifar_layout(fmt: CifarFormat) -> str:
    return f"<dataset.root>/{fmt.folder}/ holding {', '.join(fmt.files)}"


def _cifar_missing_message(fmt: CifarFormat, folder: Path, missing: list[str]) -> str:
    what = f"missing: {', '.join(_absent(folder, m) for m in missing)}" if folder.is_dir() else \
        "the folder does not exist"
    return (
        f"{fmt.label} not found: looked in {folder} ({what}). Expected layout: {_cifar_layout(fmt)}. "
        "To get it, run once with dataset.download=true on a machine with internet access, "
        f"or download {fmt.archive} from https://www.cs.toronto.edu/~kriz/cifar.html, extract it into a folder DIR "
        f"(giving DIR/{fmt.folder}) and pass dataset.root=DIR"
    )


def _corrupt(fmt: CifarFormat, path: Path, what: str, exc: BaseException | None = None) -> DataError:
    detail = f" ({type(exc).__name__}: {_first_line(exc)})" if exc is not None else ""
    return DataError(
        f"{fmt.label} file {path} is corrupt or not a {fmt.label} {what}{detail}; replace it with a fresh copy "
        f"from {fmt.archive} (or delete {path.parent} and use dataset.download=true)"
    )


def _read_cifar_part(fmt: CifarFormat, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        entry = read_pickle(path)
        data = np.asarray(entry["data"])
        key = fmt.label_key if fmt.label_key in entry else "labels"
        labels = np.asarray(entry[key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
        if labels.shape != (data.shape[0],):
            raise ValueError(f"{labels.size} labels for {data.shape[0]} images")
    except Exception as exc:  # truncated pickle, wrong content, unreadable file ...
        raise _corrupt(fmt, path, "batch", exc) from None
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(cfg: Any, fmt: CifarFormat) -> LoadResult:
    """CIFAR-10 or CIFAR-100 from the python pickles under ``<root>/<fmt.folder>``."""
    root = _root(cfg)
    folder = root / fmt.folder
    missing = [name for name in fmt.files if not (folder / name).is_file()]
    if missing and cfg.download:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, fmt.torchvision_class)
        _download(fmt.label, fmt.url, root, lambda: cls(str(root), train=True, download=True), str(folder))
        missing = [name for name in fmt.files if not (folder / name).is_file()]
    if missing:
        raise DataError(_cifar_missing_message(fmt, folder, missing))

    try:
        meta = read_pickle(folder / fmt.meta_file)
        class_names = [str(n) for n in meta[fmt.names_key]]
    except Exception as exc:
        raise _corrupt(fmt, folder / fmt.meta_file, "meta file", exc) from None

    def read(names: tuple[str, ...]) -> ImageSet:
        parts = [_read_cifar_part(fmt, folder / name) for name in names]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        bad = (labels < 0) | (labels >= len(class_names))
        if bad.any():
            raise DataError(
                f"{fmt.label} files in {folder} hold label {int(labels[bad][0])}, outside the "
                f"{len(class_names)} classes of {fmt.meta_file}: the files are corrupt; replace them with a fresh "
                f"copy from {fmt.archive}"
            )
        return ImageSet(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))

    train = read(fmt.train_files)
    test = read(fmt.test_files)
    info = {"source": str(folder), "md5_verified": _warn_md5(fmt.label, folder, fmt.md5), "class_names": class_names}
    return train, test, len(class_names), info


def load_cifar10(cfg: Any) -> LoadResult:
    return load_cifar(cfg, CIFAR10)


def load_cifar100(cfg: Any) -> LoadResult:
    return load_cifar(cfg, CIFAR100)


# --------------------------------------------------------------------------- SVHN

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
SVHN_MD5 = {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373", "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN cropped-digits .mat file: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 (10 is the digit 0)."""
    try:
        import scipy.io
    except ImportError:
        raise DataError(
            f"reading SVHN ({path}) needs scipy, which cannot be imported: pip install scipy"
        ) from None
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise ValueError(f"'X' is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
        y = y.reshape(-1).astype(np.int64)
        if y.shape != (x.shape[3],):
            raise ValueError(f"{y.size} labels for {x.shape[3]} images")
        if y.size and (y.min() < 0 or y.max() > 10):
            raise ValueError(f"labels outside 0..10 (found {int(y.min())}..{int(y.max())})")
    except Exception as exc:
        raise DataError(
            f"SVHN file {path} is corrupt or not an SVHN cropped-digits file ({type(exc).__name__}: "
            f"{_first_line(exc)}); replace it with a fresh copy of {path.name} from {SVHN_URL}"
        ) from None
    y[y == 10] = 0  # the release labels the digit 0 as 10 (torchvision maps it back the same way)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def load_svhn(cfg: Any) -> LoadResult:
    """SVHN's train split (search, retraining) and test split (retraining's test), without ``extra``."""
    root = _root(cfg)
    candidates = [root, root / "svhn"]

    def find() -> Path | None:
        for folder in candidates:
            if all((folder / name).is_file() for name in SVHN_FILES.values()):
                return folder
        return None

    folder = find()
    if folder is None and cfg.download:
        from torchvision.datasets import SVHN

        def fetch() -> None:
            for split in SVHN_FILES:
                SVHN(str(root), split=split, download=True)

        _download("SVHN", SVHN_URL, root, fetch, f"{root}/train_32x32.mat and test_32x32.mat")
        folder = find()
    if folder is None:
        found = {str(f): [n for n in SVHN_FILES.values() if (f / n).is_file()] for f in candidates}
        seen = "; ".join(f"{f}: {', '.join(n) if n else 'none of them'}" for f, n in found.items())
        raise DataError(
            f"SVHN not found: looked for train_32x32.mat and test_32x32.mat in {candidates[0]} and {candidates[1]} "
            f"(found {seen}). Expected layout: <dataset.root>/train_32x32.mat and <dataset.root>/test_32x32.mat "
            "(torchvision's SVHN layout). To get them, run once with dataset.download=true on a machine with "
            f"internet access, or download the two files of 'Format 2' from {SVHN_URL} into a folder DIR and "
            "pass dataset.root=DIR"
        )
    parts = {split: _read_svhn_mat(folder / name) for split, name in SVHN_FILES.items()}
    train = ImageSet(torch.from_numpy(parts["train"][0]), torch.from_numpy(parts["train"][1]))
    test = ImageSet(torch.from_numpy(parts["test"][0]), torch.from_numpy(parts["test"][1]))
    info = {"source": str(folder), "splits": {"train": "train_32x32.mat", "test": "test_32x32.mat"},
            "md5_verified": _warn_md5("SVHN", folder, SVHN_MD5)}
    return train, test, 10, info


# --------------------------------------------------------------------------- Fashion-MNIST (IDX files)

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed when its name ends in .gz) of unsigned bytes, as a numpy array.

    Layout: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, one big-endian
    uint32 per dimension, then the payload. Anything else raises :class:`ValueError`.
    """
    with open_regular(path) as fh:
        raw = gzip.GzipFile(fileobj=fh).read() if path.suffix == ".gz" else fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError("not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"IDX type byte 0x{raw[2]:02x} is not 0x08 (unsigned bytes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError("IDX header is truncated")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise ValueError(f"payload holds {len(raw) - header} bytes, the header announces {shape} = {size}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist_folders(cfg: Any) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order: torchvision's layout under the root, the root, Debian's folder."""
    root = _root(cfg)
    return [root / "FashionMNIST" / "raw", root, FASHION_MNIST_DEBIAN]


def _fashion_set(files: dict[str, Path], arrays: dict[str, np.ndarray], images_key: str, labels_key: str) -> ImageSet:
    """One split from its two IDX arrays, refused (naming the files) unless they are Fashion-MNIST's."""
    images, labels = arrays[images_key], arrays[labels_key].astype(np.int64)
    if images.ndim == 3 and images.shape[1:] != (28, 28):
        raise DataError(
            f"Fashion-MNIST file {files[images_key]} holds {images.shape[1]}x{images.shape[2]} images, but "
            "Fashion-MNIST images are 28x28: the file is not Fashion-MNIST or is damaged; replace it "
            f"(apt-get install --reinstall dataset-fashion-mnist, or a fresh download from {FASHION_MNIST_URL})"
        )
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0] or labels.max(initial=0) > 9:
        raise DataError(
            f"Fashion-MNIST files {files[images_key]} and {files[labels_key]} do not fit together "
            f"(images {images.shape}, labels {labels.shape}, expected (N, 28, 28) and N labels in 0..9): "
            "replace them with fresh copies"
        )
    return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels))


def load_fashion_mnist(cfg: Any) -> LoadResult:
    """Fashion-MNIST from IDX files (plain or .gz), e.g. those of Debian's ``dataset-fashion-mnist``."""
    folders = fashion_mnist_folders(cfg)

    def find() -> tuple[Path, dict[str, Path]] | None:
        for folder in folders:
            files = {key: _idx_file(folder, name) for key, name in FASHION_MNIST_FILES.items()}
            if all(files.values()):
                return folder, files  # type: ignore[return-value]
        return None

    found = find()
    if found is None and cfg.download:
        from torchvision.datasets import FashionMNIST

        root = _root(cfg)
        _download("Fashion-MNIST", FASHION_MNIST_URL, root, lambda: FashionMNIST(str(root), train=True, download=True),
                  str(folders[0]))
        found = find()
    if found is None:
        partial = []
        for folder in folders:
            present = [path.name for name in FASHION_MNIST_FILES.values() if (path := _idx_file(folder, name))]
            if present:
                partial.append(f"{folder} has only {', '.join(present)}")
        note = f" ({'; '.join(partial)})" if partial else ""
        raise DataError(
            f"Fashion-MNIST not found: looked in {', '.join(str(f) for f in folders)}{note}. Expected layout: the four "
            f"IDX files {', '.join(FASHION_MNIST_FILES.values())} (each plain or .gz) in one of those folders "
            "(<dataset.root>/FashionMNIST/raw is torchvision's layout). To get them: apt-get install "
            f"dataset-fashion-mnist (Debian/Ubuntu, installs {FASHION_MNIST_DEBIAN}), or run once with "
            f"dataset.download=true on a machine with internet access, or download them from {FASHION_MNIST_URL} "
            "and pass dataset.root=DIR"
        )
    folder, files = found
    arrays = {}
    for key, path in files.items():
        try:
            arrays[key] = read_idx(path)
        except Exception as exc:  # bad gzip stream, truncated payload, foreign file ...
            raise DataError(
                f"Fashion-MNIST file {path} is corrupt or not an IDX file ({type(exc).__name__}: {_first_line(exc)}); "
                "replace it (apt-get install --reinstall dataset-fashion-mnist, or a fresh download from "
                f"{FASHION_MNIST_URL})"
            ) from None

    train = _fashion_set(files, arrays, "train_images", "train_labels")
    test = _fashion_set(files, arrays, "test_images", "test_labels")
    info = {"source": str(folder), "class_names": list(FASHION_MNIST_CLASSES)}
    return train, test, 10, info


__all__ = [
    "CIFAR10",
    "CIFAR100",
    "CifarFormat",
    "FASHION_MNIST_DEBIAN",
    "load_cifar",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_svhn",
    "read_idx",
    "read_pickle",
]
