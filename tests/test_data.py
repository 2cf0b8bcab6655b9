"""Tests of nasrun.data: loaders, splits, augmentation and resumable streams (CPU, fast)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import RandomCrop

from nasrun.config.schema import DatasetConf
from nasrun.data import (
    BatchStream,
    ImageSet,
    cutout,
    eval_batches,
    index_hash,
    load_dataset,
    normalize,
    random_crop,
    random_flip,
    search_split,
)
from nasrun.errors import DataError


def digits_conf(**kw) -> DatasetConf:
    base = dict(name="digits", in_channels=1, image_size=8, num_classes=10, mean=None, std=None, train_augment=[])
    base.update(kw)
    return DatasetConf(**base)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(digits_conf())


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_values(digits):
    assert len(digits.train) + len(digits.test) == 1797
    assert digits.train.images.shape[1:] == (1, 8, 8)
    assert digits.train.images.dtype == torch.uint8
    assert digits.train.labels.dtype == torch.int64
    assert int(digits.train.images.max()) == 255 and int(digits.train.images.min()) == 0
    assert set(digits.train.labels.tolist()) == set(range(10))
    info = digits.info
    assert info["name"] == "digits" and info["num_classes"] == 10
    assert info["num_train"] == len(digits.train) and info["num_test"] == len(digits.test)
    assert info["mean_computed"] and info["std_computed"]
    x = digits.train.images.double() / 255
    assert digits.mean[0] == pytest.approx(x.mean().item())
    assert digits.std[0] == pytest.approx(x.std(correction=0).item())


def test_digits_split_is_stratified(digits):
    from sklearn.datasets import load_digits

    y = load_digits().target
    for c in range(10):
        n_c = int((y == c).sum())
        n_test = int((digits.test.labels == c).sum())
        n_train = int((digits.train.labels == c).sum())
        assert n_test + n_train == n_c
        assert abs(n_test - 0.2 * n_c) <= 1


def test_digits_split_seeded(digits):
    same = load_dataset(digits_conf())
    assert torch.equal(same.test.images, digits.test.images)
    assert torch.equal(same.train.labels, digits.train.labels)
    assert same.info["test_index_hash"] == digits.info["test_index_hash"]
    other = load_dataset(digits_conf(split_seed=1))
    assert other.info["test_index_hash"] != digits.info["test_index_hash"]
    assert not torch.equal(other.test.images, digits.test.images)


def test_given_mean_std_are_used():
    b = load_dataset(digits_conf(mean=[0.5], std=[0.25]))
    assert b.mean == (0.5,) and b.std == (0.25,)
    assert not b.info["mean_computed"] and not b.info["std_computed"]


def test_shape_mismatch_names_the_key():
    with pytest.raises(DataError, match="dataset.in_channels"):
        load_dataset(digits_conf(in_channels=3))
    with pytest.raises(DataError, match="dataset.image_size=8"):
        load_dataset(digits_conf(image_size=32))
    with pytest.raises(DataError, match="dataset.num_classes=10"):
        load_dataset(digits_conf(num_classes=100))


# --------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_learnable():
    cfg = DatasetConf(name="synthetic", in_channels=3, image_size=16, num_classes=4, num_train=200, num_test=80,
                      mean=None, std=None)
    b = load_dataset(cfg)
    assert b.train.images.shape == (200, 3, 16, 16) and b.test.images.shape == (80, 3, 16, 16)
    assert b.train.images.dtype == torch.uint8 and b.test.labels.dtype == torch.int64
    assert set(b.train.labels.tolist()) == set(range(4))
    assert len(b.mean) == 3 and len(b.std) == 3
    again = load_dataset(cfg)
    assert torch.equal(again.train.images, b.train.images)
    # a nearest-class-mean classifier is far above chance (0.25)
    xtr, xte = b.train.images.flatten(1).float(), b.test.images.flatten(1).float()
    centroids = torch.stack([xtr[b.train.labels == c].mean(0) for c in range(4)])
    pred = torch.cdist(xte, centroids).argmin(1)
    assert (pred == b.test.labels).float().mean() > 0.8


# --------------------------------------------------------------------------- cifar10


def _write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_tiny_cifar(root: Path, per_batch: int = 4, n_test: int = 6) -> dict:
    """Write cifar-10-batches-py in the published pickle layout, with a few images per file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        if i == 2:  # bytes keys, as a Python 3 writer (or encoding="bytes" reader) sees them
            entry = {b"batch_label": b"training batch 2 of 5", b"data": data, b"labels": labels}
        else:  # str keys, as the original Python 2 files load with encoding="latin1"
            entry = {"batch_label": f"training batch {i} of 5", "data": data, "labels": labels,
                     "filenames": [f"img{j}.png" for j in range(per_batch)]}
        _write_pickle(folder / f"data_batch_{i}", entry)
        written[f"data_batch_{i}"] = (data, labels)
    data = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n_test)]
    _write_pickle(folder / "test_batch", {"data": data, "labels": labels})
    written["test_batch"] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch,
                                            "num_vis": 3072})
    return written


def cifar_conf(root: Path, **kw) -> DatasetConf:
    return DatasetConf(name="cifar10", root=str(root), **kw)


def test_cifar10_missing_root(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_dataset(cifar_conf(root))
    msg = str(err.value)
    assert str(root / "cifar-10-batches-py") in msg
    assert "dataset.download" in msg and "dataset.root" in msg
    assert "data_batch_1" in msg and "test_batch" in msg and "batches.meta" in msg
    assert "\n" not in msg


def test_cifar10_partly_missing(tmp_path):
    make_tiny_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="missing: data_batch_4"):
        load_dataset(cifar_conf(tmp_path))


def test_cifar10_reads_pickle_format(tmp_path):
    written = make_tiny_cifar(tmp_path)
    b = load_dataset(cifar_conf(tmp_path))
    assert b.train.images.shape == (20, 3, 32, 32) and b.test.images.shape == (6, 3, 32, 32)
    assert b.train.images.dtype == torch.uint8 and b.train.labels.dtype == torch.int64
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert np.array_equal(b.train.images.numpy(), expected)
    assert b.train.labels.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert b.test.labels.tolist() == written["test_batch"][1]
    assert b.mean == pytest.approx((0.49139968, 0.48215827, 0.44653124))
    assert b.info["md5_verified"] is False
    assert b.info["source"] == str(tmp_path / "cifar-10-batches-py")
    assert b.info["class_names"][0] == "airplane"


def test_cifar10_reads_python2_module_names(tmp_path):
    # the original files name numpy's pre-2.0 module; the reader must accept that spelling too
    written = make_tiny_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    b = load_dataset(cifar_conf(tmp_path))
    assert np.array_equal(b.train.images[:4].numpy().reshape(4, -1), written["data_batch_1"][0])


def test_cifar10_truncated_file(tmp_path):
    make_tiny_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(DataError, match="data_batch_3 is corrupt"):
        load_dataset(cifar_conf(tmp_path))


def test_cifar10_wrong_content_and_foreign_objects(tmp_path):
    make_tiny_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    _write_pickle(folder / "test_batch", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(DataError, match="test_batch is corrupt"):
        load_dataset(cifar_conf(tmp_path))
    # a pickle that would build an arbitrary object is refused, not executed
    _write_pickle(folder / "test_batch", {"data": Path("/"), "labels": []})
    with pytest.raises(DataError, match="test_batch is corrupt"):
        load_dataset(cifar_conf(tmp_path))


def test_cifar10_download_failure_is_a_data_error(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, *args, **kwargs):
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(DataError, match="dataset.download=true could not fetch"):
        load_dataset(cifar_conf(tmp_path / "data", download=True))


# --------------------------------------------------------------------------- search split


def test_search_split():
    a_tr, a_val = search_split(101, 0.5, seed=3)
    b_tr, b_val = search_split(101, 0.5, seed=3)
    assert torch.equal(a_tr, b_tr) and torch.equal(a_val, b_val)
    assert len(a_tr) == round(0.5 * 101) and len(a_tr) + len(a_val) == 101
    assert set(a_tr.tolist()).isdisjoint(a_val.tolist())
    assert sorted(a_tr.tolist() + a_val.tolist()) == list(range(101))
    c_tr, _ = search_split(101, 0.5, seed=4)
    assert not torch.equal(a_tr, c_tr)
    assert index_hash(a_tr) == index_hash(b_tr) != index_hash(c_tr)
    assert len(index_hash(a_tr)) == 16 and int(index_hash(a_tr), 16) >= 0
    t, v = search_split(10, 0.7, seed=0)
    assert len(t) == 7 and len(v) == 3
    with pytest.raises(DataError):
        search_split(1, 0.5, seed=0)


# --------------------------------------------------------------------------- augmentation


def _distinct_batch(b=8, c=3, h=6, w=5, seed=0):
    # strictly positive, distinct values so each window of the zero-padded input is recognisable
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g) * 0.9 + 0.1


def test_random_crop_is_a_window_of_the_padded_image():
    p = 2
    x = _distinct_batch(b=300)
    h, w = x.shape[2:]
    out = random_crop(x, p, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    seen = set()
    for i in range(x.shape[0]):
        padded = TF.pad(x[i], [p])  # torchvision's own zero padding
        hits = [(top, left) for top in range(2 * p + 1) for left in range(2 * p + 1)
                if torch.equal(TF.crop(padded, top, left, h, w), out[i])]
        assert len(hits) == 1
        seen.add(hits[0])
    assert seen == {(t, l) for t in range(2 * p + 1) for l in range(2 * p + 1)}
    # torchvision's RandomCrop output is, likewise, one of these windows
    torch.manual_seed(0)
    ref = RandomCrop((h, w), padding=p, fill=0)(x[0])
    padded = TF.pad(x[0], [p])
    assert any(torch.equal(TF.crop(padded, t, l, h, w), ref) for t in range(2 * p + 1) for l in range(2 * p + 1))


def test_random_crop_offsets_roughly_uniform_and_seeded():
    p = 4
    x = torch.zeros(4000, 1, 3, 3)
    x[:, :, 1, 1] = 1.0  # a single marker pixel: its position reveals the offset
    gen = torch.Generator().manual_seed(7)
    out = random_crop(x, p, gen)
    visible = out.flatten(1).sum(1) == 1
    assert visible.float().mean() < 0.5  # most windows (offsets != centre +-1) miss the marker
    counts = torch.zeros(2 * p + 1, 2 * p + 1)
    # offsets (top, left) with the marker visible map to one pixel position each
    for top in range(2 * p + 1):
        for left in range(2 * p + 1):
            r, c = 1 + p - top, 1 + p - left
            if 0 <= r < 3 and 0 <= c < 3:
                counts[top, left] = (out[:, 0, r, c] == 1).sum()
    nonzero = counts[counts > 0]
    assert len(nonzero) == 9
    assert nonzero.min() > 4000 / 81 * 0.5 and nonzero.max() < 4000 / 81 * 1.5
    again = random_crop(x, p, torch.Generator().manual_seed(7))
    assert torch.equal(out, again)
    assert torch.equal(random_crop(x, 0, gen), x)


def test_random_flip():
    x = _distinct_batch(b=400)
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same ^ flipped).all())
    assert 0.4 < flipped.float().mean().item() < 0.6


@pytest.mark.parametrize("length", [4, 3])
def test_cutout_matches_darts_window(length):
    h, w = 7, 6
    x = torch.ones(500, 2, h, w)
    gen = torch.Generator().manual_seed(3)
    replay = torch.Generator()
    replay.set_state(gen.get_state())
    out = cutout(x, length, gen)
    cy = torch.randint(0, h, (500,), generator=replay)
    cx = torch.randint(0, w, (500,), generator=replay)
    areas = []
    for i in range(500):
        y1, x1 = int(cy[i]) - length // 2, int(cx[i]) - length // 2
        ref = np.ones((h, w), np.float32)
        ref[max(y1, 0):min(y1 + length, h), max(x1, 0):min(x1 + length, w)] = 0
        for ch in range(2):
            assert np.array_equal(out[i, ch].numpy(), ref)
        areas.append(int((ref == 0).sum()))
    assert max(areas) == length * length  # a square fully inside
    assert min(areas) < length * length  # and some clipped at a border
    assert min(areas) >= (length - length // 2) ** 2 - 0  # a corner keeps at least its inner quadrant


def test_cutout_even_length_equals_darts_clip():
    # DARTS: y1 = clip(y - L//2, 0, h), y2 = clip(y + L//2, 0, h)
    h = w = 8
    L = 4
    gen = torch.Generator().manual_seed(0)
    replay = torch.Generator()
    replay.set_state(gen.get_state())
    out = cutout(torch.ones(50, 1, h, w), L, gen)
    cy = torch.randint(0, h, (50,), generator=replay)
    cx = torch.randint(0, w, (50,), generator=replay)
    for i in range(50):
        y, xx = int(cy[i]), int(cx[i])
        mask = np.ones((h, w), np.float32)
        mask[np.clip(y - L // 2, 0, h):np.clip(y + L // 2, 0, h), np.clip(xx - L // 2, 0, w):np.clip(xx + L // 2, 0, w)] = 0
        assert np.array_equal(out[i, 0].numpy(), mask)


def test_normalize():
    x = torch.rand(2, 3, 4, 4)
    out = normalize(x, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    assert torch.allclose(out[:, 1], (x[:, 1] - 0.2) / 0.25)


# --------------------------------------------------------------------------- streams


def _indexed_set(n=50, c=1, s=4):
    """Images whose first pixel encodes their index, labels = index."""
    images = torch.zeros(n, c, s, s, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n, dtype=torch.int64))


def test_stream_passes_cover_subset_and_roll_over():
    data = _indexed_set(50)
    subset = torch.arange(10, 47)
    s = BatchStream(data, subset, batch_size=8, seed=0, mean=(0.0,), std=(1.0,))
    assert s.batches_per_pass == 37 // 8 and s.batch_size == 8 and len(s) == 37
    passes = []
    for _ in range(3):
        ys = torch.cat([next(s)[1] for _ in range(s.batches_per_pass)])
        assert len(ys) == 32 and len(set(ys.tolist())) == 32 and set(ys.tolist()) <= set(subset.tolist())
        passes.append(ys)
    assert s.pass_index == 2
    assert not torch.equal(passes[0], passes[1])
    # the pass order depends only on (seed, pass): a fresh stream repeats it
    s2 = BatchStream(data, subset, batch_size=8, seed=0, mean=(0.0,), std=(1.0,))
    assert torch.equal(torch.cat([next(s2)[1] for _ in range(4)]), passes[0])
    # without drop_last the last partial batch is kept and every image appears once per pass
    s3 = BatchStream(data, subset, batch_size=8, seed=0, mean=(0.0,), std=(1.0,), drop_last=False)
    assert s3.batches_per_pass == 5
    ys = torch.cat([next(s3)[1] for _ in range(5)])
    assert sorted(ys.tolist()) == subset.tolist()


def test_stream_values_and_types():
    data = _indexed_set(20)
    s = BatchStream(data, None, batch_size=5, seed=1, mean=(0.5,), std=(0.25,), shuffle=False)
    x, y = next(s)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (5, 1, 4, 4)
    assert y.tolist() == [0, 1, 2, 3, 4]
    assert torch.allclose(x, (data.images[:5].float() / 255 - 0.5) / 0.25)


def test_stream_tiny_subset_uses_one_smaller_batch():
    data = _indexed_set(20)
    s = BatchStream(data, torch.tensor([3, 5, 7]), batch_size=64, seed=0, mean=(0.0,), std=(1.0,))
    assert s.batch_size == 3 and s.batches_per_pass == 1
    for _ in range(3):
        assert sorted(next(s)[1].tolist()) == [3, 5, 7]
    with pytest.raises(DataError):
        BatchStream(data, torch.tensor([], dtype=torch.long), batch_size=4, seed=0, mean=(0.0,), std=(1.0,))


def _aug_stream(data, seed=5):
    return BatchStream(data, torch.arange(3, 43), batch_size=6, seed=seed, mean=(0.2, 0.3, 0.4),
                       std=(0.5, 0.5, 0.5), augment=("crop", "flip"), crop_padding=2, cutout=3)


@pytest.mark.parametrize("taken", [0, 2, 6, 13])  # 6 batches per pass: start, mid, end of pass, later pass
def test_stream_resume_is_exact(taken):
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (50, 3, 8, 8), generator=g, dtype=torch.uint8),
                    torch.randint(0, 10, (50,), generator=g))
    original = _aug_stream(data)
    for _ in range(taken):
        next(original)
    state = copy.deepcopy(original.state_dict())
    expected = [next(original) for _ in range(10)]
    resumed = _aug_stream(data)
    next(resumed)  # its own position must be overwritten by the state
    resumed.load_state_dict(state)
    for (xe, ye), (xr, yr) in zip(expected, (next(resumed) for _ in range(10))):
        assert torch.equal(xe, xr) and torch.equal(ye, yr)
    # the state survives torch.save / torch.load (how checkpoints store it)
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    again = _aug_stream(data)
    again.load_state_dict(torch.load(buf, weights_only=True))
    xa, ya = next(again)
    assert torch.equal(xa, expected[0][0]) and torch.equal(ya, expected[0][1])


def test_stream_refuses_state_of_another_stream():
    data = _indexed_set(50, c=3)
    state = _aug_stream(data, seed=5).state_dict()
    with pytest.raises(DataError, match="seed"):
        _aug_stream(data, seed=6).load_state_dict(state)


def test_eval_batches_cover_every_index_once():
    data = _indexed_set(50)
    ys = [y for _, y in eval_batches(data, None, 16, (0.0,), (1.0,), "cpu")]
    assert [len(y) for y in ys] == [16, 16, 16, 2]
    assert torch.cat(ys).tolist() == list(range(50))
    idx = torch.tensor([7, 3, 41, 0, 19])
    out = list(eval_batches(data, idx, 2, (0.5,), (0.5,), "cpu"))
    assert torch.cat([y for _, y in out]).tolist() == idx.tolist()
    x0 = out[0][0]
    assert torch.allclose(x0, (data.images[idx[:2]].float() / 255 - 0.5) / 0.5)
