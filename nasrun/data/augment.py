"""Batched image augmentation as plain tensor operations (works on CPU and GPU alike).

Inputs are float batches (B, C, H, W). Every random draw is made on the CPU from the
``torch.Generator`` passed in and only then moved to the batch's device, so a given generator
state produces the same augmentation whatever device the images live on.

The DARTS-family order is: ``random_crop`` and ``random_flip`` on images in [0, 1], then
``normalize``, then ``cutout`` (so the erased square holds 0, i.e. the per-channel mean).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_batch(x: Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")


def _window_gather(x: Tensor, padding: int, top: Tensor, left: Tensor, flip: Tensor | None) -> Tensor:
    """Cut the HxW window at (top, left) of every zero-padded image (mirrored where ``flip``) with one gather."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding)) if padding > 0 else x
    hp, wp = h + 2 * padding, w + 2 * padding
    cols = torch.arange(w, device=x.device).expand(b, w)
    if flip is not None:
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    rows = top[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = left[:, None] + cols  # (B, W)
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, flat).reshape(b, c, h, w)


def random_crop(x: Tensor, padding: int, gen: torch.Generator) -> Tensor:
    """Zero-pad each image by ``padding`` on every side and cut an HxW window at a random offset.

    Equivalent to ``torchvision.transforms.RandomCrop((H, W), padding=padding, fill=0)`` applied to
    every image independently: the top and left offsets into the padded image are each uniform on
    ``0 .. 2*padding``. Done with one gather, no per-sample loop; works on uint8 and float batches.
    """
    _check_batch(x, "random_crop")
    if padding <= 0:
        return x
    offsets = torch.randint(0, 2 * padding + 1, (2, x.shape[0]), generator=gen).to(x.device)
    return _window_gather(x, padding, offsets[0], offsets[1], None)


def random_flip(x: Tensor, gen: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 0.5."""
    _check_batch(x, "random_flip")
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def crop_and_flip(x: Tensor, padding: int, gen: torch.Generator) -> Tensor:
    """``random_flip(random_crop(x, padding, gen), gen)`` in one gather: the same draws, the same result."""
    _check_batch(x, "crop_and_flip")
    b = x.shape[0]
    if padding > 0:
        offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=gen).to(x.device)
    else:
        offsets = torch.zeros(2, b, dtype=torch.long, device=x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    return _window_gather(x, max(padding, 0), offsets[0], offsets[1], flip)


def cutout(x: Tensor, length: int, gen: torch.Generator) -> Tensor:
    """Set one ``length`` x ``length`` square per image to 0 (all channels).

    The square's centre is a uniformly random pixel; rows ``cy - length//2`` up to (excluding)
    ``cy - length//2 + length`` and likewise for columns, clipped at the border, so a square near
    an edge is partly outside the image (as in the DARTS ``Cutout``). For even ``length`` this is
    exactly the DARTS window. ``length <= 0`` returns ``x`` unchanged.
    """
    _check_batch(x, "cutout")
    if length <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=gen).to(x.device)
    cx = torch.randint(0, w, (b,), generator=gen).to(x.device)
    top, left = cy - length // 2, cx - length // 2
    r = torch.arange(h, device=x.device)[None, :]
    c = torch.arange(w, device=x.device)[None, :]
    in_rows = (r >= top[:, None]) & (r < top[:, None] + length)  # (B, H)
    in_cols = (c >= left[:, None]) & (c < left[:, None] + length)  # (B, W)
    erase = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    return x.masked_fill(erase[:, None], 0.0)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel ``(x - mean) / std``."""
    _check_batch(x, "normalize")
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(f"normalize got {len(mean)} means and {len(std)} stds for {x.shape[1]} channels")
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 images -> float32 in [0, 1]; float images are only cast to float32."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32)


__all__ = ["random_crop", "random_flip", "crop_and_flip", "cutout", "normalize", "to_unit_float"]
