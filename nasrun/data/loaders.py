"""The classic input pipeline (``dataset.loader=torch``) behind the interface of :class:`BatchStream`.

:class:`TorchStream` is a ``torch.utils.data.DataLoader`` with worker processes and pinned memory
that applies torchvision transforms image by image, as the DARTS-family scripts do. It is the only
path for file-backed sets (ImageNet) and an alternative to the GPU-resident :class:`BatchStream`
for in-memory sets. Both streams are endless, expose ``batches_per_pass``, ``batch_size`` and
``len()``, and resume exactly from ``state_dict()``.

Reproducibility without shared state: the images of pass ``p`` come in the same order as in
:class:`BatchStream` (:func:`pass_order`), and every image of a pass is transformed under its own
seed, drawn from ``(seed, p)``. The global torch generator is seeded with it for the duration of
that one transform and restored afterwards, so the batches depend neither on the number of workers
nor on which worker decodes what, the caller's random state is left untouched, and a stream can
restart at any batch of any pass.

:func:`make_stream` picks the stream for ``dataset.loader``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from nasrun.data.augment import normalize, to_unit_float
from nasrun.data.datasets import ImageSet
from nasrun.data.folders import FOLDER_AUGMENTATIONS, FolderSet
from nasrun.data.streams import AUGMENTATIONS, BatchStream, PassStream, _derived_seed, pass_order
from nasrun.data.streams import ShardedBatchStream, shard_bounds, take_shard
from nasrun.errors import DataError

LOADERS = ("device", "torch")
_STATE_VERSION = 1


# --------------------------------------------------------------------------- per-image transforms


class Cutout:
    """Zero one ``length`` x ``length`` square of a normalised (C, H, W) image.

    The same window as :func:`nasrun.data.augment.cutout` (centre uniform over the pixels, rows
    ``cy - length//2`` up to ``cy - length//2 + length``, clipped at the border), drawn from the
    global torch generator like the torchvision transforms.
    """

    def __init__(self, length: int) -> None:
        self.length = int(length)

    def __call__(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        cy = int(torch.randint(0, h, (1,)))
        cx = int(torch.randint(0, w, (1,)))
        top, left = cy - self.length // 2, cx - self.length // 2
        out = x.clone()
        out[..., max(top, 0):max(min(top + self.length, h), 0), max(left, 0):max(min(left + self.length, w), 0)] = 0.0
        return out

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


class UnitFloat:
    """uint8 (C, H, W) -> float32 in [0, 1] (float input is only cast)."""

    def __call__(self, x: Tensor) -> Tensor:
        return to_unit_float(x)

    def __repr__(self) -> str:
        return "UnitFloat()"


def memory_transform(image_shape: Sequence[int], augment: Sequence[str], padding: int, mean: Sequence[float],
                     std: Sequence[float], cutout: int = 0) -> Callable[[Tensor], Tensor]:
    """torchvision's per-image pipeline equivalent to BatchStream's batched one.

    ``RandomCrop(padding, fill=0)`` and ``RandomHorizontalFlip`` on the uint8 image, scaling to
    [0, 1], ``Normalize``, then cutout (after normalisation, as in the DARTS scripts).
    """
    from torchvision import transforms as T

    _, h, w = image_shape
    steps: list[Any] = []
    if "crop" in augment and padding > 0:
        steps.append(T.RandomCrop((h, w), padding=padding, fill=0))
    if "flip" in augment:
        steps.append(T.RandomHorizontalFlip())
    steps += [UnitFloat(), T.Normalize(list(mean), list(std))]
    if cutout > 0:
        steps.append(Cutout(cutout))
    return T.Compose(steps)


def resize_side(image_size: int) -> int:
    """The shorter side images are resized to before the evaluation centre crop (256 for 224)."""
    return round(image_size * 256 / 224)


def folder_train_transform(image_size: int, augment: Sequence[str], mean: Sequence[float], std: Sequence[float],
                           cutout: int = 0) -> Callable[[Any], Tensor]:
    """The DARTS ImageNet training transform, step by step as chosen by ``augment``.

    ``resized_crop``: RandomResizedCrop(image_size) (else the evaluation resize and centre crop);
    ``flip``: RandomHorizontalFlip; ``color_jitter``: ColorJitter(0.4, 0.4, 0.4, 0.2); then scaling to
    [0, 1], Normalize and (when ``cutout`` > 0) cutout.
    """
    from torchvision import transforms as T

    steps: list[Any] = []
    if "resized_crop" in augment:
        steps.append(T.RandomResizedCrop(image_size))
    else:
        steps += [T.Resize(resize_side(image_size)), T.CenterCrop(image_size)]
    if "flip" in augment:
        steps.append(T.RandomHorizontalFlip())
    if "color_jitter" in augment:
        steps.append(T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2))
    steps += [T.PILToTensor(), UnitFloat(), T.Normalize(list(mean), list(std))]
    if cutout > 0:
        steps.append(Cutout(cutout))
    return T.Compose(steps)


def folder_eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], Tensor]:
    """Resize(256) -> CenterCrop(224) -> Normalize, scaled to ``image_size``."""
    return folder_train_transform(image_size, (), mean, std)


def _seeded(seed: int, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with the global CPU generator seeded with ``seed``; restore the generator afterwards."""
    gen = torch.default_generator
    saved = gen.get_state()
    gen.manual_seed(seed)
    try:
        return fn()
    finally:
        gen.set_state(saved)


class _View(Dataset):
    """Items ``index`` or ``(index, seed)`` of an ImageSet or FolderSet, transformed into (image, label)."""

    def __init__(self, data: ImageSet | FolderSet, transform: Callable[[Any], Tensor]) -> None:
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def _item(self, index: int) -> tuple[Tensor, int]:
        if isinstance(self.data, ImageSet):
            image, label = self.data.images[index], int(self.data.labels[index])
        else:
            image, label = self.data.load(index)
        return self.transform(image), label

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, int]:
        if isinstance(item, tuple):
            index, seed = item
            return _seeded(seed, lambda: self._item(index))
        return self._item(item)


def _clean(exc: DataError) -> DataError:
    """A DataError raised in a worker comes back with the worker's traceback; keep only its message."""
    text = str(exc)
    if not text.startswith("Caught "):
        return exc
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else text
    for prefix in ("nasrun.errors.DataError: ", "DataError: "):
        if last.startswith(prefix):
            return DataError(last[len(prefix):])
    return DataError(last)


# --------------------------------------------------------------------------- the stream


class _PassSampler(Sampler):
    """Yields ``(index, seed)`` for the rest of the stream's current pass, from its current position."""

    def __init__(self, stream: "TorchStream") -> None:
        self._stream = stream

    def __len__(self) -> int:
        s = self._stream
        return s._pass_stop() - s._position * s._batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        s = self._stream
        start, stop = s._position * s._batch, s._pass_stop()
        order = pass_order(s._n, s.seed, s._pass, s.shuffle)[start:stop]
        seeds = s._pass_seeds(s._pass)[start:stop]
        index = order if s._index is None else s._index[order]
        return iter(zip(index.tolist(), seeds.tolist()))


class TorchStream(PassStream):
    """An endless, resumable stream of transformed batches from a DataLoader (``dataset.loader=torch``).

    The arguments are those of :class:`BatchStream`, plus ``workers`` (DataLoader worker processes;
    0 decodes in the calling process) and ``pin_memory`` (used when ``device`` is CUDA). ``data``
    may be an :class:`ImageSet` (augmentations ``crop``, ``flip``) or a :class:`FolderSet`
    (``resized_crop``, ``flip``, ``color_jitter``; with none of them the evaluation resize and
    centre crop). Each item is ``(x, y)``: ``x`` float32 (B, C, H, W) normalised, ``y`` int64 (B,),
    both on ``device``.
    """

    def __init__(
        self,
        data: ImageSet | FolderSet,
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
        workers: int = 2,
        pin_memory: bool = True,
    ) -> None:
        folder = isinstance(data, FolderSet)
        allowed = FOLDER_AUGMENTATIONS if folder else AUGMENTATIONS
        unknown = [a for a in augment if a not in allowed]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}: allowed are {', '.join(allowed)}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if not folder:
            data = data.to("cpu")
        self.device = torch.device(device)
        self._index = None if indices is None else indices.detach().to("cpu", torch.long)
        n = len(data) if self._index is None else int(self._index.numel())
        self._init_passes(n, batch_size, seed, shuffle, drop_last)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = tuple(augment)
        self.workers = int(workers)
        if folder:
            transform = folder_train_transform(data.image_size, self.augment, self.mean, self.std, cutout)
        else:
            transform = memory_transform(data.image_shape, self.augment, crop_padding, self.mean, self.std, cutout)
        self.pin_memory = bool(pin_memory) and self.device.type == "cuda"
        self._loader = DataLoader(
            _View(data, transform),
            batch_size=self._batch,
            sampler=_PassSampler(self),
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.workers > 0,
            # the loader draws its workers' base seed from this generator, not from the global one
            generator=torch.Generator().manual_seed(_derived_seed(self.seed, 3)),
        )
        self._iter: Iterator | None = None

    loader = "torch"

    def _pass_stop(self) -> int:
        return self._batches_per_pass * self._batch if self.drop_last else self._n

    def _pass_seeds(self, p: int) -> Tensor:
        gen = torch.Generator().manual_seed(_derived_seed(self.seed, 2, p))
        return torch.randint(0, 2**62, (self._n,), generator=gen)

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self._roll_pass():
            self._iter = None
        if self._iter is None:
            self._iter = iter(self._loader)
        try:
            x, y = next(self._iter)
        except DataError as exc:
            raise _clean(exc) from None
        self._position += 1
        return x.to(self.device, non_blocking=self.pin_memory), y.to(self.device, torch.long, non_blocking=self.pin_memory)

    def state_dict(self) -> dict:
        """Where the stream stands (pass, batches taken in it) plus sizes to check on load."""
        return self._pass_state()

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s output; the stream must be built on the same subset and settings."""
        self._load_pass_state(state)
        self._iter = None


def make_stream(
    data: ImageSet | FolderSet,
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
    loader: str = "device",
    workers: int = 2,
    pin_memory: bool = True,
) -> BatchStream | TorchStream:
    """A :class:`BatchStream` (``loader="device"``) or a :class:`TorchStream` (``loader="torch"``)."""
    if loader not in LOADERS:
        raise DataError(f"dataset.loader={loader!r} is not allowed: one of {', '.join(LOADERS)}")
    common = dict(augment=augment, crop_padding=crop_padding, cutout=cutout, device=device, shuffle=shuffle,
                  drop_last=drop_last)
    if loader == "torch":
        return TorchStream(data, indices, batch_size, seed, mean, std, workers=workers, pin_memory=pin_memory,
                           **common)
    if not isinstance(data, ImageSet):
        raise DataError("dataset.loader=device is not allowed for a dataset read from files (imagenet): "
                        "use dataset.loader=torch")
    return BatchStream(data, indices, batch_size, seed, mean, std, **common)


def folder_eval_batches(data: FolderSet, indices: Tensor | None, batch_size: int, mean: Sequence[float],
                        std: Sequence[float], device: str | torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """One ordered pass over (a subset of) a FolderSet with the evaluation transform, decoded by a DataLoader."""
    device = torch.device(device)
    pin = data.pin_memory and device.type == "cuda"
    order = list(range(len(data))) if indices is None else indices.detach().cpu().tolist()
    loader = DataLoader(_View(data, folder_eval_transform(data.image_size, mean, std)), batch_size=batch_size,
                        sampler=order, num_workers=data.workers, pin_memory=pin, generator=torch.Generator())
    batches = iter(loader)
    while True:
        try:
            x, y = next(batches)
        except StopIteration:
            return
        except DataError as exc:
            raise _clean(exc) from None
        yield x.to(device, non_blocking=pin), y.to(device, torch.long, non_blocking=pin)


__all__ = [
    "Cutout",
    "LOADERS",
    "TorchStream",
    "folder_eval_batches",
    "folder_eval_transform",
    "folder_train_transform",
    "make_stream",
    "memory_transform",
]


def eval_batches(
    data: ImageSet,
    indices: Tensor | None,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One ordered pass over (a subset of) ``data`` for evaluation: no augmentation, last batch kept.

    Yields ``(x, y)`` on ``device`` like :class:`BatchStream`, covering every selected image exactly
    once in the order of ``indices`` (or of ``data``). A file-backed set (ImageNet) is decoded by a
    DataLoader with its evaluation transform (resize, centre crop).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(data, ImageSet):
        yield from folder_eval_batches(data, indices, batch_size, mean, std, device)
        return
    n = len(data) if indices is None else int(indices.numel())
    idx_all = None if indices is None else indices.detach().to(data.images.device, torch.long)
    for start in range(0, n, batch_size):
        if idx_all is None:
            images = data.images[start : start + batch_size]
            labels = data.labels[start : start + batch_size]
        else:
            idx = idx_all[start : start + batch_size]
            images = data.images[idx]
            labels = data.labels[idx.to(data.labels.device)]
        x = normalize(to_unit_float(images.to(device, non_blocking=True)), mean, std)
        yield x, labels.to(device=device, dtype=torch.long)


# --------------------------------------------------------------------------- sharding (multi-process retraining)


class _ShardBatchSampler(Sampler):
    """Yields, for the rest of the current pass, this rank's slice of every global batch as ``(index, seed)`` lists.

    The global batches and the per-image seeds are the one-process stream's, so each image is decoded by
    exactly one rank and transformed exactly as one process would.
    """

    def __init__(self, stream: "ShardedTorchStream") -> None:
        self._stream = stream

    def __len__(self) -> int:
        return self._stream._batches_per_pass - self._stream._position

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        s = self._stream
        stop = s._pass_stop()
        order = pass_order(s._n, s.seed, s._pass, s.shuffle)
        index = order if s._index is None else s._index[order]
        index, seeds = index.tolist(), s._pass_seeds(s._pass).tolist()  # seeds go by position in the pass
        for b in range(s._position, s._batches_per_pass):
            start = b * s._batch
            size = min(s._batch, stop - start)
            lo, hi = shard_bounds(size, s.rank, s.world)
            yield [(index[i], seeds[i]) for i in range(start + lo, start + hi)]


class ShardedTorchStream(TorchStream):
    """Rank ``rank`` of ``world``'s slice of every batch of the one-process :class:`TorchStream`.

    Only the rank's own images are decoded (no redundant work on ImageNet); :meth:`state_dict` is the
    one-process stream's (pass and position in global batches), so a checkpoint resumes under any number
    of ranks. ``global_batch`` is the size of the global batch the last slice came from.
    """

    def __init__(self, *args, rank: int, world: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        take_shard(self, rank, world)
        old = self._loader
        self._loader = DataLoader(old.dataset, batch_sampler=_ShardBatchSampler(self), num_workers=self.workers,
                                  pin_memory=self.pin_memory, persistent_workers=self.workers > 0,
                                  generator=torch.Generator().manual_seed(_derived_seed(self.seed, 3)))

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self._position >= self._batches_per_pass:  # the next slice opens a new pass
            self.global_batch = min(self._batch, self._pass_stop())
        else:
            self.global_batch = min(self._batch, self._pass_stop() - self._position * self._batch)
        return super().__next__()


def make_shard_stream(rank: int, world: int, data: ImageSet | FolderSet, indices: Tensor | None, batch_size: int,
                      seed: int, mean: Sequence[float], std: Sequence[float], loader: str = "device",
                      workers: int = 2, pin_memory: bool = True,
                      **common: Any) -> ShardedBatchStream | ShardedTorchStream:
    """:func:`make_stream`'s stream, cut to rank ``rank`` of ``world``'s slice of every global batch."""
    if loader not in LOADERS:
        raise DataError(f"dataset.loader={loader!r} is not allowed: one of {', '.join(LOADERS)}")
    if loader == "torch":
        return ShardedTorchStream(data, indices, batch_size, seed, mean, std, workers=workers, pin_memory=pin_memory,
                                  rank=rank, world=world, **common)
    if not isinstance(data, ImageSet):
        raise DataError("dataset.loader=device is not allowed for a dataset read from files (imagenet): "
                        "use dataset.loader=torch")
    return ShardedBatchStream(data, indices, batch_size, seed, mean, std, rank=rank, world=world, **common)


__all__ += ["ShardedBatchStream", "ShardedTorchStream", "make_shard_stream"]
