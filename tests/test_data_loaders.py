"""The two input pipelines: the device loader's batched augmentation against torchvision's per-image
functions, the torch loader's DataLoader stream (same batches as the device loader, independent of the
worker count, exact resume), and a search that resumes exactly on the torch loader."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from conftest import TINY_SEARCH
from nasrun.config.compose import compose, to_typed
from nasrun.data import BatchStream, ImageSet, TorchStream, make_stream
from nasrun.data.loaders import Cutout, memory_transform
from nasrun.errors import DataError
from nasrun.search.loop import run_search

MEAN, STD = (0.2, 0.3, 0.4), (0.5, 0.25, 0.5)


def _images(n=40, c=3, s=8, seed=0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    # values 1..255, so zero padding is recognisable, labels = index
    return ImageSet(torch.randint(1, 256, (n, c, s, s), generator=g, dtype=torch.uint8), torch.arange(n))


def _stream(kind, data, indices=None, workers=0, **kw):
    args = dict(batch_size=6, seed=5, mean=MEAN, std=STD, augment=("crop", "flip"), crop_padding=2, cutout=3)
    args.update(kw)
    if kind == "device":
        return BatchStream(data, indices, **args)
    return TorchStream(data, indices, workers=workers, **args)


# --------------------------------------------------------------------------- device loader vs torchvision


def test_device_batch_equals_torchvision_functions_for_the_same_draws():
    """Crop, flip, normalise, cutout of a BatchStream batch, redone image by image with torchvision's
    functional ops (and the DARTS cutout window) from a replay of the stream's random draws."""
    data = _images()
    stream = _stream("device", data, shuffle=False)
    replay = torch.Generator()
    replay.set_state(stream.state_dict()["aug_rng"])
    x, y = next(stream)
    b, p, length = len(y), 2, 3
    offsets = torch.randint(0, 2 * p + 1, (2, b), generator=replay)
    flips = torch.rand(b, generator=replay) < 0.5
    cy = torch.randint(0, 8, (b,), generator=replay)
    cx = torch.randint(0, 8, (b,), generator=replay)
    for i in range(b):
        img = TF.crop(TF.pad(data.images[int(y[i])], [p], fill=0), int(offsets[0, i]), int(offsets[1, i]), 8, 8)
        if flips[i]:
            img = TF.hflip(img)
        img = TF.normalize(img.float() / 255, list(MEAN), list(STD))
        top, left = int(cy[i]) - length // 2, int(cx[i]) - length // 2
        img[:, max(top, 0):max(top + length, 0), max(left, 0):max(left + length, 0)] = 0
        torch.testing.assert_close(x[i], img, rtol=0, atol=1e-6)


def test_torch_loader_transform_is_torchvisions_pipeline():
    data = _images(n=1)
    transform = memory_transform((3, 8, 8), ("crop", "flip"), 2, MEAN, STD, cutout=3)
    names = [type(t).__name__ for t in transform.transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "UnitFloat", "Normalize", "Cutout"]
    # Cutout draws its centre like the DARTS Cutout, from the global generator
    torch.manual_seed(11)
    out = Cutout(4)(torch.ones(2, 7, 6))
    torch.manual_seed(11)
    y, x = int(torch.randint(0, 7, (1,))), int(torch.randint(0, 6, (1,)))
    mask = torch.ones(7, 6)
    mask[max(y - 2, 0):min(y + 2, 7), max(x - 2, 0):min(x + 2, 6)] = 0
    assert torch.equal(out, mask.expand(2, 7, 6))
    assert data.images.shape == (1, 3, 8, 8)


def _window_and_flip(out: torch.Tensor, image: torch.Tensor, p: int) -> tuple[int, int, bool] | None:
    padded = TF.pad(image, [p], fill=0)
    h, w = image.shape[1:]
    for top in range(2 * p + 1):
        for left in range(2 * p + 1):
            window = TF.crop(padded, top, left, h, w)
            for flip in (False, True):
                if torch.equal(TF.hflip(window) if flip else window, out):
                    return top, left, flip
    return None


@pytest.mark.parametrize("kind", ["device", "torch"])
def test_both_loaders_draw_crops_and_flips_uniformly(kind):
    """Where draws cannot be shared: the same statistics, every image a window (or its mirror) of the
    zero-padded original, each of the 25 offsets and both flips about equally often."""
    data = _images(n=400, c=1, s=5, seed=1)
    stream = _stream(kind, data, batch_size=100, mean=(0.0,), std=(1.0,), cutout=0)
    seen = []
    for _ in range(4):
        x, y = next(stream)
        for i in range(len(y)):
            hit = _window_and_flip((x[i] * 255).round().to(torch.uint8), data.images[int(y[i])], 2)
            assert hit is not None
            seen.append(hit)
    offsets = np.zeros((5, 5))
    for top, left, _ in seen:
        offsets[top, left] += 1
    assert offsets.min() > 400 / 25 * 0.4 and offsets.max() < 400 / 25 * 1.8
    assert 0.4 < np.mean([f for *_, f in seen]) < 0.6


# --------------------------------------------------------------------------- torch loader stream


def test_torch_stream_follows_the_device_stream_order():
    data = _images(50)
    subset = torch.arange(3, 46)
    dev, tor = _stream("device", data, subset), _stream("torch", data, subset)
    assert (tor.batches_per_pass, tor.batch_size, len(tor)) == (dev.batches_per_pass, dev.batch_size, len(dev))
    for _ in range(2 * dev.batches_per_pass + 1):  # across pass boundaries
        (xd, yd), (xt, yt) = next(dev), next(tor)
        assert torch.equal(yd, yt) and xt.shape == xd.shape and xt.dtype == torch.float32
    last = TorchStream(data, subset, 8, seed=0, mean=MEAN, std=STD, drop_last=False, workers=0)
    ys = torch.cat([next(last)[1] for _ in range(last.batches_per_pass)])
    assert last.batches_per_pass == 6 and sorted(ys.tolist()) == subset.tolist()
    tiny = TorchStream(data, torch.tensor([4, 9]), 64, seed=0, mean=MEAN, std=STD, workers=0)
    assert tiny.batch_size == 2 and sorted(next(tiny)[1].tolist()) == [4, 9]


@pytest.mark.parametrize("taken", [0, 3, 7, 15])  # 7 batches per pass: start, mid, end of pass, a later pass
def test_torch_stream_resume_is_exact(taken):
    data = _images(50)
    subset = torch.arange(2, 44)
    original = _stream("torch", data, subset)
    for _ in range(taken):
        next(original)
    state = copy.deepcopy(original.state_dict())
    expected = [next(original) for _ in range(9)]
    resumed = _stream("torch", data, subset)
    next(resumed)
    resumed.load_state_dict(state)
    for (xe, ye), (xr, yr) in zip(expected, (next(resumed) for _ in range(9))):
        assert torch.equal(xe, xr) and torch.equal(ye, yr)


def test_torch_stream_is_independent_of_workers_and_leaves_global_rng_alone():
    data = _images(30)
    rng_before = torch.get_rng_state()
    serial = _stream("torch", data, workers=0)
    batches = [next(serial) for _ in range(12)]  # 5 batches per pass: rolls over twice
    assert torch.equal(torch.get_rng_state(), rng_before)
    parallel = _stream("torch", data, workers=2)
    for x, y in batches:
        xp, yp = next(parallel)
        assert torch.equal(x, xp) and torch.equal(y, yp)
    assert not torch.equal(batches[0][0], batches[5][0])  # a new pass draws new augmentations


def test_streams_refuse_each_others_state():
    data = _images(30)
    with pytest.raises(DataError, match="loader"):
        _stream("torch", data).load_state_dict(_stream("device", data).state_dict())
    with pytest.raises(DataError, match="loader"):
        _stream("device", data).load_state_dict(_stream("torch", data).state_dict())
    with pytest.raises(DataError, match="seed"):
        _stream("torch", data).load_state_dict(_stream("torch", data, seed=6).state_dict())
    with pytest.raises(DataError, match="dataset.loader='gpu'"):
        make_stream(data, None, 4, seed=0, mean=MEAN, std=STD, loader="gpu")
    assert isinstance(make_stream(data, None, 4, seed=0, mean=MEAN, std=STD, loader="torch", workers=0), TorchStream)


# --------------------------------------------------------------------------- a search on the torch loader


class Stop(Exception):
    pass


def test_search_on_the_torch_loader_resumes_exactly(tmp_path):
    overrides = [o for o in TINY_SEARCH if not o.startswith(("dataset=", "search.batch_size="))] + [
        "dataset=synthetic", "dataset.num_train=64", "dataset.num_test=16", "dataset.subset=8",
        "dataset.train_augment=[crop,flip]", "dataset.loader=torch", "dataset.workers=0", "search.batch_size=8",
        "search.epochs=2", "seed=3",
    ]
    cfg = to_typed(compose("search", overrides))
    straight = run_search(cfg, tmp_path / "straight")

    def stop(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        run_search(cfg, tmp_path / "resumed", on_epoch_end=stop)
    resumed = run_search(cfg, tmp_path / "resumed")
    assert resumed["status"] == "completed" and resumed["genotype"] == straight["genotype"]
    a, b = np.load(tmp_path / "straight" / "alphas.npz"), np.load(tmp_path / "resumed" / "alphas.npz")
    np.testing.assert_array_equal(a["normal"], b["normal"])
    result = json.loads((tmp_path / "resumed" / "result.json").read_text())
    data = result["data"]
    assert data["loader"] == "torch" and data["num_train"] == 32 and data["subset"]["per_class"] == "count"
    assert data["subset"]["train_index_hash"] and result["split"]["train_hash"] and result["split"]["train"] == 16
