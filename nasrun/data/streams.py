"""Mini-batch streams that keep the data on the compute device and can be resumed exactly.

:class:`BatchStream` replaces a ``DataLoader`` in the search and retrain loops: the uint8 images of
its subset are moved to the device once, each batch is gathered there, converted to float,
augmented and normalised with tensor ops, and the stream never ends (passes over the subset roll
over on their own), so the loops just call ``next(stream)``.

Reproducibility: the order of pass ``p`` is a permutation drawn from a CPU generator seeded with
``(seed, p)``, so any pass can be rebuilt from two integers; augmentation draws come from a second
CPU generator whose state is part of :meth:`BatchStream.state_dict`. Restoring that dict gives
exactly the batches the original stream would have produced next, on any device.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from nasrun.data.augment import cutout as _cutout
from nasrun.data.augment import crop_and_flip, normalize, random_crop, random_flip, to_unit_float
from nasrun.data.datasets import ImageSet
from nasrun.errors import DataError

AUGMENTATIONS = ("crop", "flip")
_STATE_VERSION = 1


def _derived_seed(seed: int, *key: int) -> int:
    """A 64-bit seed derived from ``seed`` and a key path (independent streams per key)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    state = np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)).generate_state(1, np.uint64)
    return int(state[0])


def pass_order(n: int, seed: int, p: int, shuffle: bool = True) -> Tensor:
    """The order (CPU int64 permutation of ``range(n)``) of pass ``p`` of a stream seeded with ``seed``.

    Shared by both loaders, so ``dataset.loader=device`` and ``dataset.loader=torch`` put the same
    images into each batch of a pass (their augmentation draws differ).
    """
    if not shuffle:
        return torch.arange(n)
    gen = torch.Generator(device="cpu").manual_seed(_derived_seed(seed, 0, p))
    return torch.randperm(n, generator=gen)


class PassStream:
    """Pass and batch bookkeeping shared by both loaders' streams: sizes, position, resume state.

    A stream walks pass after pass over ``n`` images in batches; ``(pass, position)`` says where it
    stands, which is all a checkpoint needs besides a subclass's own random state.
    """

    loader = ""

    def _init_passes(self, n: int, batch_size: int, seed: int, shuffle: bool, drop_last: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n == 0:
            raise DataError("a data stream got an empty set of images: check dataset sizes and dataset.search_split")
        self._n = n
        self._batch = min(int(batch_size), n) if drop_last else int(batch_size)
        self._batches_per_pass = n // self._batch if drop_last else -(-n // self._batch)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._pass = 0
        self._position = 0

    def __len__(self) -> int:
        """Number of images in the streamed subset."""
        return self._n

    @property
    def batch_size(self) -> int:
        """Images per batch actually used (smaller than requested only for a tiny subset)."""
        return self._batch

    @property
    def batches_per_pass(self) -> int:
        """Batches in one pass over the subset."""
        return self._batches_per_pass

    @property
    def pass_index(self) -> int:
        """The pass (0-based) the next batch comes from, unless the current one is exhausted."""
        return self._pass

    def __iter__(self) -> "PassStream":
        return self

    def _roll_pass(self) -> bool:
        """Start the next pass if the current one is used up; True when it did."""
        if self._position < self._batches_per_pass:
            return False
        self._pass += 1
        self._position = 0
        return True

    def _pass_state(self) -> dict:
        return {"version": _STATE_VERSION, "loader": self.loader, "pass": self._pass, "position": self._position,
                "seed": self.seed, "num_samples": self._n, "batch_size": self._batch}

    def _load_pass_state(self, state: dict) -> None:
        """Check that ``state`` was saved by an equal stream, then take its pass and position."""
        for key, mine in (("loader", self.loader), ("seed", self.seed), ("num_samples", self._n),
                          ("batch_size", self._batch)):
            saved = state.get(key, "device" if key == "loader" else None)  # older states: device loader
            if saved != mine:
                raise DataError(
                    f"cannot resume a data stream saved with {key}={saved!r} into one with {key}={mine!r}: "
                    "the dataset, split, loader or batch size differs from the checkpoint's run"
                )
        position = int(state["position"])
        if not 0 <= position <= self._batches_per_pass:
            raise DataError(f"data stream state has position {position} outside 0..{self._batches_per_pass}")
        self._pass = int(state["pass"])
        self._position = position


class BatchStream(PassStream):
    """An endless, resumable stream of augmented, normalised mini-batches from (a subset of) an ImageSet.

    Args:
        data: the images (uint8 0..255, or float in [0, 1]) and labels.
        indices: which images of ``data`` to stream (e.g. one half of :func:`search_split`);
            ``None`` streams all of them.
        batch_size: images per batch.
        seed: seeds both the per-pass order and the augmentation generator.
        mean, std: per-channel normalisation constants (of images scaled to [0, 1]).
        augment: any of ``"crop"`` (zero-padded random crop) and ``"flip"`` (horizontal flip),
            applied in that order before normalisation.
        crop_padding: padding of the random crop.
        cutout: side of the cutout square applied after normalisation; 0 disables it.
        device: where the subset is kept and batches are produced.
        shuffle: draw a new permutation every pass (else the subset's order is kept).
        drop_last: skip the final incomplete batch of each pass, so every batch has the same size.

    A subset smaller than ``batch_size`` with ``drop_last`` does not fail: the stream then yields
    one batch of the whole subset per pass (see :attr:`batch_size`). An empty subset raises
    :class:`DataError`.

    Each item is ``(x, y)``: ``x`` float32 (B, C, H, W) normalised, ``y`` int64 (B,), both on ``device``.
    """

    def __init__(
        self,
        data: ImageSet,
        indices: Tensor | None,
        batch_size: int,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Sequence[str] = (),
        crop_padding: int = 4,
        cutout: int = 0,
        device: str | torch.device = "cpu",
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        unknown = [a for a in augment if a not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}: allowed are {', '.join(AUGMENTATIONS)}")
        self.device = torch.device(device)
        if indices is None:
            images, labels = data.images, data.labels
        else:
            idx = indices.detach().to("cpu", torch.long)
            images = data.images[idx.to(data.images.device)]
            labels = data.labels[idx.to(data.labels.device)]
        self._init_passes(int(labels.shape[0]), batch_size, seed, shuffle, drop_last)
        self._images = images.to(self.device)
        self._labels = labels.to(device=self.device, dtype=torch.long)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = tuple(augment)
        self.crop_padding = int(crop_padding)
        self.cutout = int(cutout)
        self._aug_gen = torch.Generator(device="cpu").manual_seed(_derived_seed(self.seed, 1))
        self._order = self._pass_order(0)

    # ------------------------------------------------------------------ iteration

    def _pass_order(self, p: int) -> Tensor:
        return pass_order(self._n, self.seed, p, self.shuffle).to(self.device)

    loader = "device"

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self._roll_pass():
            self._order = self._pass_order(self._pass)
        start = self._position * self._batch
        idx = self._order[start : start + self._batch]
        self._position += 1
        # crop and flip move pixels only, so they run on the uint8 batch (a quarter of the bytes)
        x = self._images[idx]
        if "crop" in self.augment and "flip" in self.augment:
            x = crop_and_flip(x, self.crop_padding, self._aug_gen)
        elif "crop" in self.augment:
            x = random_crop(x, self.crop_padding, self._aug_gen)
        elif "flip" in self.augment:
            x = random_flip(x, self._aug_gen)
        x = normalize(to_unit_float(x), self.mean, self.std)
        if self.cutout > 0:
            x = _cutout(x, self.cutout, self._aug_gen)
        return x, self._labels[idx]

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict:
        """Where the stream stands: pass, batches taken in it, augmentation RNG state (plus sizes, to check on load)."""
        return {**self._pass_state(), "aug_rng": self._aug_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s output; the stream must be built on the same subset and settings."""
        self._load_pass_state(state)
        self._aug_gen.set_state(state["aug_rng"].to("cpu", torch.uint8))
        self._order = self._pass_order(self._pass)


# ------------------------------------------------------------------ sharding (multi-process retraining)


def shard_bounds(size: int, rank: int, world: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s slice of a global batch of ``size`` images split over ``world`` ranks.

    Contiguous slices whose sizes differ by at most one (the first ``size % world`` ranks take one more),
    so the ranks' slices put back in rank order are the global batch.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in 0..{world - 1}, got {rank}")
    return size * rank // world, size * (rank + 1) // world


def check_shardable(n: int, batch_size: int, world: int, drop_last: bool) -> None:
    """Refuse a split that would leave a rank an empty slice of a pass's last, short batch.

    An empty slice cannot be trained on (BatchNorm has no statistics to take), and skipping it on one
    rank would desynchronise the ranks' gradient all-reduces.
    """
    last = 0 if drop_last else n % batch_size
    if 0 < last < world:
        raise DataError(
            f"the last batch of every pass over the {n} training images holds {last} image(s), fewer than the "
            f"{world} processes sharing it: choose a recipe.batch_size that leaves at least {world} (or none)"
        )


def take_shard(stream: PassStream, rank: int, world: int) -> None:
    """Make ``stream`` rank ``rank`` of ``world``'s view of the one-process stream (checked first)."""
    shard_bounds(0, rank, world)  # checks rank and world
    check_shardable(stream._n, stream._batch, world, stream.drop_last)
    stream.rank, stream.world = int(rank), int(world)
    stream.global_batch = 0


class ShardedBatchStream(BatchStream):
    """Rank ``rank`` of ``world``'s slice of every batch of the one-process :class:`BatchStream`.

    Every rank walks the same global order (the same per-pass permutation, the same global batches)
    and augments the whole global batch, so the augmentation generator advances exactly as in one
    process; it then keeps its :func:`shard_bounds` slice. The redundant augmentation is cheap next to
    the network, and it makes :meth:`state_dict` the one-process stream's own state: a checkpoint
    resumes under any number of ranks. ``global_batch`` is the size of the global batch the last slice
    came from (the loss is scaled by it so that the ranks' averaged gradient is the global batch's).
    """

    def __init__(self, *args, rank: int, world: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        take_shard(self, rank, world)

    def __next__(self) -> tuple[Tensor, Tensor]:
        x, y = super().__next__()
        self.global_batch = int(y.shape[0])
        lo, hi = shard_bounds(self.global_batch, self.rank, self.world)
        return x[lo:hi], y[lo:hi]


__all__ = ["BatchStream", "ShardedBatchStream", "check_shardable", "pass_order", "shard_bounds", "AUGMENTATIONS"]
