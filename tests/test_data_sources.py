"""Dataset configs and sources: every config composes, each on-disk format loads (small files written
here in the published layout; Fashion-MNIST also for real when Debian's package is installed), clear
errors for missing or broken files, and the seeded subsets."""

from __future__ import annotations

import gzip
import os
import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from nasrun.config.schema import DATASETS, DatasetConf
from nasrun.config.compose import compose, to_typed
from nasrun.data import eval_batches, index_hash, load_dataset, make_stream, per_class_subset, search_split
from nasrun.data import formats
from nasrun.data.files import open_regular
from nasrun.errors import ConfigError, DataError

DATASET_CONFIGS = sorted(p.name[:-5] for p in resources.files("nasrun.conf").joinpath("dataset").iterdir()
                         if p.name.endswith(".yaml"))
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# --------------------------------------------------------------------------- configs


def test_dataset_configs_match_the_schema():
    assert set(DATASET_CONFIGS) == set(DATASETS)
    assert {"cifar10", "cifar100", "svhn", "imagenet", "fashion_mnist", "digits", "synthetic"} <= set(DATASETS)


@pytest.mark.parametrize("name", DATASET_CONFIGS)
def test_every_dataset_config_composes_and_validates(name):
    search = to_typed(compose("search", [f"dataset={name}"])).dataset
    retrain = to_typed(compose("retrain", ["genotype=DARTS_V2", f"dataset={name}"])).dataset
    assert search == retrain
    d = search
    assert d.name == name
    assert d.in_channels >= 1 and d.image_size >= 8 and d.num_classes >= 2
    for stats in (d.mean, d.std):  # given per channel, or computed from the data (null)
        assert stats is None or len(stats) == d.in_channels
    assert d.loader == ("torch" if name == "imagenet" else "device")
    assert d.subset is None and d.subset_classes is None
    # the quick-run options compose on every dataset
    small = to_typed(compose("search", [f"dataset={name}", "dataset.subset=0.1", "dataset.loader=torch",
                                        "dataset.workers=0", "dataset.subset_classes=2"])).dataset
    assert (small.subset, small.loader, small.workers, small.num_classes) == (0.1, "torch", 0, 2)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["dataset=imagenet", "dataset.loader=device"], "dataset.loader"),
        (["dataset=imagenet", "dataset.train_augment=[crop]"], "dataset.train_augment"),
        (["dataset=imagenet", "dataset.mean=null"], "dataset.mean/std"),
        (["dataset=imagenet", "dataset.download=true"], "dataset.download"),
        (["dataset=cifar10", "dataset.train_augment=[resized_crop]"], "dataset.train_augment"),
        (["dataset=cifar10", "dataset.loader=gpu"], "dataset.loader"),
        (["dataset=cifar10", "dataset.workers=-1"], "dataset.workers"),
        (["dataset=cifar10", "dataset.subset=0"], "dataset.subset"),
        (["dataset=cifar10", "dataset.subset=1.5"], "dataset.subset"),
        (["dataset=cifar10", "dataset.subset=many"], "dataset.subset"),
        (["dataset=cifar100", "dataset.subset_classes=101"], "dataset.subset_classes"),
    ],
)
def test_bad_dataset_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_typed(compose("search", overrides))


def test_subset_semantics_follow_the_value_type():
    frac = to_typed(compose("search", ["dataset=cifar10", "dataset.subset=1.0"])).dataset
    count = to_typed(compose("search", ["dataset=cifar10", "dataset.subset=1"])).dataset
    assert isinstance(frac.subset, float) and isinstance(count.subset, int)


# --------------------------------------------------------------------------- CIFAR-100


def _write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_tiny_cifar100(root: Path, n_train: int = 12, n_test: int = 5) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        entry = {"filenames": [f"{i}.png" for i in range(n)], "batch_label": name, "fine_labels": fine,
                 "coarse_labels": [v // 5 for v in fine], "data": data}
        _write_pickle(folder / name, entry)
        written[name] = (data, fine)
    _write_pickle(folder / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)],
                                    "coarse_label_names": [f"super{i:02d}" for i in range(20)]})
    return written


def cifar100_conf(root: Path, **kw) -> DatasetConf:
    return DatasetConf(name="cifar100", root=str(root), num_classes=100, mean=[0.5071, 0.4867, 0.4408],
                       std=[0.2675, 0.2565, 0.2761], **kw)


def test_cifar100_reads_pickle_format(tmp_path):
    written = make_tiny_cifar100(tmp_path)
    b = load_dataset(cifar100_conf(tmp_path))
    assert b.train.images.shape == (12, 3, 32, 32) and b.test.images.shape == (5, 3, 32, 32)
    assert np.array_equal(b.train.images.numpy().reshape(12, -1), written["train"][0])
    assert b.train.labels.tolist() == written["train"][1]  # fine labels, not coarse
    assert b.test.labels.tolist() == written["test"][1]
    assert b.info["class_names"][:2] == ["class00", "class01"] and len(b.info["class_names"]) == 100
    assert b.info["md5_verified"] is False and b.info["num_classes"] == 100


def test_cifar100_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(cifar100_conf(tmp_path / "none"))
    msg = str(err.value)
    assert str(tmp_path / "none" / "cifar-100-python") in msg and "meta" in msg
    assert "dataset.download=true" in msg and "dataset.root" in msg and "cifar-100-python.tar.gz" in msg
    make_tiny_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="CIFAR-100 file .*train is corrupt"):
        load_dataset(cifar100_conf(tmp_path))


# --------------------------------------------------------------------------- SVHN


def write_svhn(folder: Path, n_train: int = 10, n_test: int = 4) -> dict:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    written = {}
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 standing for the digit 0
        savemat(folder / name, {"X": x, "y": y})
        written[name] = (x, y)
    return written


def svhn_conf(root: Path, **kw) -> DatasetConf:
    return DatasetConf(name="svhn", root=str(root), mean=[0.4377, 0.4438, 0.4728], std=[0.198, 0.201, 0.197], **kw)


def test_svhn_reads_mat_format(tmp_path):
    written = write_svhn(tmp_path)
    b = load_dataset(svhn_conf(tmp_path))
    x, y = written["train_32x32.mat"]
    assert b.train.images.shape == (10, 3, 32, 32) and len(b.test) == 4
    assert np.array_equal(b.train.images[3].numpy(), x[:, :, :, 3].transpose(2, 0, 1))
    assert b.train.labels.tolist() == [v % 10 for v in y.ravel().tolist()]  # 10 -> 0
    assert b.info["splits"] == {"train": "train_32x32.mat", "test": "test_32x32.mat"}
    # also found in an svhn/ sub-folder of the root
    write_svhn(tmp_path / "other" / "svhn")
    assert load_dataset(svhn_conf(tmp_path / "other")).info["source"] == str(tmp_path / "other" / "svhn")


def test_svhn_missing_and_corrupt(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DataError) as err:
        load_dataset(svhn_conf(tmp_path))
    msg = str(err.value)
    assert "test_32x32.mat" in msg and str(tmp_path) in msg and "dataset.download=true" in msg and "\n" not in msg
    write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(DataError, match="SVHN file .*train_32x32.mat is corrupt"):
        load_dataset(svhn_conf(tmp_path))


# --------------------------------------------------------------------------- Fashion-MNIST


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_fashion(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array)
    return arrays


def fashion_conf(root: Path, **kw) -> DatasetConf:
    return DatasetConf(name="fashion_mnist", root=str(root), in_channels=1, image_size=28, mean=[0.286],
                       std=[0.353], **kw)


def test_idx_reader_matches_torchvision(tmp_path):
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    arrays = write_fashion(tmp_path, gz=False)
    for name, array in arrays.items():
        ours = formats.read_idx(tmp_path / name)
        assert np.array_equal(ours, array)
        assert np.array_equal(ours, read_sn3_pascalvincent_tensor(str(tmp_path / name)).numpy())


def test_fashion_mnist_layouts_and_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "FASHION_MNIST_DEBIAN", tmp_path / "debian")
    arrays = write_fashion(tmp_path / "tv" / "FashionMNIST" / "raw")  # torchvision's layout, gzipped
    b = load_dataset(fashion_conf(tmp_path / "tv"))
    assert b.train.images.shape == (20, 1, 28, 28) and b.test.images.shape == (10, 1, 28, 28)
    assert np.array_equal(b.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert b.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    write_fashion(tmp_path / "flat", gz=False)  # plain files directly in the root
    assert load_dataset(fashion_conf(tmp_path / "flat")).info["source"] == str(tmp_path / "flat")
    write_fashion(tmp_path / "debian")  # found without any root, where the Debian package puts it
    assert load_dataset(fashion_conf(tmp_path / "empty")).info["source"] == str(tmp_path / "debian")

    monkeypatch.setattr(formats, "FASHION_MNIST_DEBIAN", tmp_path / "no-debian")
    with pytest.raises(DataError) as err:
        load_dataset(fashion_conf(tmp_path / "empty"))
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and str(tmp_path / "empty" / "FashionMNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "dataset.root" in msg and "\n" not in msg
    path = tmp_path / "tv" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="Fashion-MNIST file .*train-images-idx3-ubyte.gz is corrupt"):
        load_dataset(fashion_conf(tmp_path / "tv"))


@pytest.mark.skipif(not formats.FASHION_MNIST_DEBIAN.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real_files_from_the_debian_package(tmp_path):
    cfg = to_typed(compose("search", ["dataset=fashion_mnist", f"dataset.root={tmp_path}"])).dataset
    b = load_dataset(cfg)
    assert b.train.images.shape == (60000, 1, 28, 28) and b.test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(b.train.labels).tolist() == [6000] * 10
    assert torch.bincount(b.test.labels).tolist() == [1000] * 10
    x = b.train.images.double() / 255  # the config's constants are this set's statistics
    assert x.mean().item() == pytest.approx(cfg.mean[0], abs=5e-4)
    assert x.std().item() == pytest.approx(cfg.std[0], abs=5e-4)
    assert b.info["source"] == str(formats.FASHION_MNIST_DEBIAN)


# --------------------------------------------------------------------------- ImageNet (folder tree)


def make_image_tree(root: Path, classes=("n001", "n002", "n003"), n_train=4, n_val=2) -> None:
    from PIL import Image

    rng = np.random.default_rng(4)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (20 + 3 * i, 26, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / (f"{c}_{i}.JPEG" if i % 2 else f"{c}_{i}.png"))
            (folder / "notes.txt").write_text("not an image")  # ignored, like ImageFolder does


def imagenet_conf(root: Path, **kw) -> DatasetConf:
    base = dict(name="imagenet", root=str(root), image_size=16, num_classes=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                train_augment=["resized_crop", "flip", "color_jitter"], loader="torch", workers=0)
    base.update(kw)
    return DatasetConf(**base)


def test_imagenet_folder_tree_matches_imagefolder(tmp_path):
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    make_image_tree(tmp_path)
    b = load_dataset(imagenet_conf(tmp_path))
    assert (len(b.train), len(b.test)) == (12, 6) and b.info["num_classes"] == 3
    assert b.train.classes == ["n001", "n002", "n003"]
    ref = ImageFolder(str(tmp_path / "val"), transform=T.Compose(
        [T.Resize(18), T.CenterCrop(16), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]))
    assert [(Path(p).name, c) for p, c in ref.samples] == [(Path(p).name, c) for p, c in b.test.samples]
    batches = list(eval_batches(b.test, None, 4, b.mean, b.std, "cpu"))
    x = torch.cat([x for x, _ in batches])
    assert x.shape == (6, 3, 16, 16) and torch.cat([y for _, y in batches]).tolist() == ref.targets
    assert torch.allclose(x, torch.stack([ref[i][0] for i in range(6)]), atol=1e-6)

    train_idx, val_idx = search_split(len(b.train), 0.5, seed=0)
    stream = make_stream(b.train, train_idx, 4, seed=1, mean=b.mean, std=b.std, augment=["resized_crop", "flip"],
                         loader="torch", workers=0)
    xs, ys = next(stream)
    assert xs.shape == (4, 3, 16, 16) and set(ys.tolist()) <= set(b.train.labels[train_idx].tolist())
    with pytest.raises(DataError, match="dataset.loader=device"):
        make_stream(b.train, None, 4, seed=1, mean=b.mean, std=b.std, loader="device")


def test_imagenet_subsets(tmp_path):
    make_image_tree(tmp_path, classes=("a", "b", "c", "d"))
    cfg = imagenet_conf(tmp_path, num_classes=4, subset_classes=2, subset=3)
    assert cfg.num_classes == 2
    b = load_dataset(cfg)
    assert b.train.classes == ["a", "b"] and b.info["num_classes"] == 2
    assert torch.bincount(b.train.labels).tolist() == [3, 3] and torch.bincount(b.test.labels).tolist() == [2, 2]
    assert b.info["subset"]["num_train_full"] == 8 and b.info["subset_classes"] == 2
    again = load_dataset(imagenet_conf(tmp_path, num_classes=4, subset_classes=2, subset=3))
    assert again.train.samples == b.train.samples


def test_imagenet_errors(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(imagenet_conf(tmp_path / "none"))
    msg = str(err.value)
    assert str(tmp_path / "none" / "train") in msg and "<dataset.root>/val/<class>/<image>" in msg
    assert "dataset.root=DIR" in msg and "\n" not in msg
    make_image_tree(tmp_path)
    with pytest.raises(DataError, match="has 3 classes: set dataset.num_classes=3"):
        load_dataset(imagenet_conf(tmp_path, num_classes=1000))
    (tmp_path / "train" / "n004").mkdir()
    with pytest.raises(DataError, match="lacks the class folder"):
        load_dataset(imagenet_conf(tmp_path, num_classes=4))
    (tmp_path / "val" / "n004").mkdir()
    with pytest.raises(DataError, match="n004 holds no image files"):
        load_dataset(imagenet_conf(tmp_path, num_classes=4))
    (tmp_path / "train" / "n004").rmdir()
    bad = tmp_path / "train" / "n002" / "n002_0.png"
    bad.write_bytes(b"\x89PNG broken")
    b = load_dataset(imagenet_conf(tmp_path))
    stream = make_stream(b.train, None, 12, seed=0, mean=b.mean, std=b.std, loader="torch", workers=0)
    with pytest.raises(DataError, match=f"image file {bad} cannot be read"):
        next(stream)


# --------------------------------------------------------------------------- files that are not data files


def _returns_within(seconds: float, fn):
    """fn() run in a daemon thread: its outcome (value or exception) if it ends in time; a hang fails the test."""
    import threading

    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return box


def test_fashion_mnist_images_of_another_size_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "FASHION_MNIST_DEBIAN", tmp_path / "no-debian")
    write_fashion(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((20, 28, 27), dtype=np.uint8))
    with pytest.raises(DataError) as err:
        load_dataset(fashion_conf(tmp_path))
    msg = str(err.value)
    assert msg.startswith(f"Fashion-MNIST file {path} holds 28x27 images, but Fashion-MNIST images are 28x28")
    assert "\n" not in msg and "dataset.image_size" not in msg


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_in_place_of_a_data_file_is_refused_at_once(tmp_path, monkeypatch):
    fifo = tmp_path / "pipe.bin"
    os.mkfifo(fifo)
    box = _returns_within(2, lambda: open_regular(fifo))
    assert isinstance(box.get("error"), OSError) and "not a regular file" in str(box["error"])
    with pytest.raises(OSError, match="not a regular file"):
        open_regular("/dev/null")  # a device opens at once, and is no data file either

    make_tiny_cifar100(tmp_path / "c100")
    (tmp_path / "c100" / "cifar-100-python" / "train").unlink()
    os.mkfifo(tmp_path / "c100" / "cifar-100-python" / "train")
    box = _returns_within(2, lambda: load_dataset(DatasetConf(name="cifar100", root=str(tmp_path / "c100"),
                                                              num_classes=100)))
    assert isinstance(box.get("error"), DataError) and "missing: train (not a regular file)" in str(box["error"])

    monkeypatch.setattr(formats, "FASHION_MNIST_DEBIAN", tmp_path / "no-debian")
    write_fashion(tmp_path / "fm", gz=False)
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte").unlink()
    os.mkfifo(tmp_path / "fm" / "t10k-labels-idx1-ubyte")
    box = _returns_within(2, lambda: load_dataset(fashion_conf(tmp_path / "fm")))
    assert isinstance(box.get("error"), DataError) and "Fashion-MNIST not found" in str(box["error"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_an_image_tree_with_a_pipe_or_a_broken_link_is_refused_when_listed(tmp_path):
    make_image_tree(tmp_path)
    fifo = tmp_path / "val" / "n002" / "n002_9.JPEG"
    os.mkfifo(fifo)
    box = _returns_within(5, lambda: load_dataset(imagenet_conf(tmp_path)))
    assert isinstance(box.get("error"), DataError)
    assert str(box["error"]).startswith(f"image file {fifo} is not a regular file (a pipe, a device, a socket or a "
                                        "broken link)")
    fifo.unlink()
    link = tmp_path / "train" / "n001" / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match=f"image file {link} is not a regular file"):
        load_dataset(imagenet_conf(tmp_path))
    link.unlink()
    b = load_dataset(imagenet_conf(tmp_path))  # a pipe that appears after listing is refused when opened
    os.mkfifo(fifo)
    b.test.samples[0] = (str(fifo), 0)
    box = _returns_within(2, lambda: b.test.load(0))
    assert isinstance(box.get("error"), DataError) and f"image file {fifo} cannot be read" in str(box["error"])


# --------------------------------------------------------------------------- subsets and split determinism


def test_per_class_subset_counts_and_seeding():
    labels = np.repeat(np.arange(3), [10, 20, 5])
    frac = per_class_subset(labels, 0.5, (0, 1))
    assert np.bincount(labels[frac]).tolist() == [5, 10, 2]  # round(2.5) == 2
    assert np.array_equal(frac, np.sort(frac)) and len(set(frac.tolist())) == len(frac)
    assert np.bincount(labels[per_class_subset(labels, 7, (0, 1))]).tolist() == [7, 7, 5]
    assert np.bincount(labels[per_class_subset(labels, 0.01, (0, 1))]).tolist() == [1, 1, 1]  # never empty
    assert np.array_equal(per_class_subset(labels, 0.5, (0, 1)), frac)
    assert not np.array_equal(per_class_subset(labels, 0.5, (1, 1)), frac)


def test_subset_on_digits_is_recorded_and_deterministic():
    def conf(**kw):
        return DatasetConf(name="digits", in_channels=1, image_size=8, num_classes=10, mean=None, std=None,
                           train_augment=[], **kw)

    b = load_dataset(conf(subset=20))
    assert torch.bincount(b.train.labels).tolist() == [20] * 10
    assert torch.bincount(b.test.labels).tolist() == [20] * 10  # the test part holds 35-37 per class
    rec = b.info["subset"]
    assert rec["per_class"] == "count" and rec["num_train_full"] == 1438 and rec["seed"] == 0
    again = load_dataset(conf(subset=20))
    assert torch.equal(again.train.images, b.train.images) and again.info["subset"] == rec
    other = load_dataset(conf(subset=20, split_seed=1))
    assert other.info["subset"]["train_index_hash"] != rec["train_index_hash"]
    # the search split of the subset is a function of the seed alone
    t1, v1 = search_split(len(b.train), 0.5, seed=3)
    t2, v2 = search_split(len(again.train), 0.5, seed=3)
    assert index_hash(t1) == index_hash(t2) and index_hash(v1) == index_hash(v2)
    fewer = load_dataset(conf(subset_classes=3))
    assert fewer.info["num_classes"] == 3 and set(fewer.train.labels.tolist()) == {0, 1, 2}
