"""Depthwise convs of the stacked supernet, computed on the CPU the way oneDNN runs them fastest (same terms).

A stacked population's depthwise convs have S times the channels of a member's; on the CPU their cost
depends on the spatial size more than on the arithmetic:

- taps that only ever read the zero padding are dropped (a 5x5 kernel with dilation 2 on a 4x4 input
  reads the input with its middle 3x3 taps only): the dropped terms are zeros, and their weights get the
  zero gradient they get anyway;
- a dilation-2 conv on an input of at least :data:`PARITY_MIN_SIZE` pixels runs as dilation-1 convs on
  the input's parity phases (``fused._dilated_on_cpu``); on smaller inputs the phases are too small for
  oneDNN's kernels and the dilated conv itself is faster.

The module is an ``nn.Conv2d`` (same parameter, same state dict); other devices run the plain conv.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.supernet.fused import _dilated_on_cpu

__all__ = ["DepthwiseConv2d", "PARITY_MIN_SIZE", "useful_taps"]

#: Smallest input height/width at which a dilation-2 depthwise conv runs on the parity phases.
PARITY_MIN_SIZE = 8


def useful_taps(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """How many taps to drop from each end of one kernel axis: the symmetric part of the taps that read only padding.

    Tap ``a`` reads input ``i * stride + a * dilation - padding`` for outputs ``i < out``; it is useful if one
    of those lies inside ``[0, size)``. Only a symmetric cut keeps the output's size and alignment."""
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    useful = [a for a in range(kernel)
              if a * dilation - padding <= size - 1 and (out - 1) * stride + a * dilation - padding >= 0]
    if not useful:
        return 0
    return min(useful[0], kernel - 1 - useful[-1])


class DepthwiseConv2d(nn.Conv2d):
    """A bias-free, zero-padded depthwise conv with the CPU's fast forms (module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        (kh, kw), (ph, pw), (sh, sw), (dh, dw) = self.kernel_size, self.padding, self.stride, self.dilation
        w = self.weight
        ch = useful_taps(x.shape[2], kh, sh, ph, dh)
        cw = useful_taps(x.shape[3], kw, sw, pw, dw)
        if ch or cw:
            w = w[:, :, ch:kh - ch, cw:kw - cw]
            ph, pw = ph - ch * dh, pw - cw * dw
        elif (dh, dw) == (2, 2) and sh == sw and ph == pw == kh - 1 == kw - 1 and min(x.shape[2:]) >= PARITY_MIN_SIZE:
            return _dilated_on_cpu(x, w, sh, ph)
        return F.conv2d(x, w, None, (sh, sw), (ph, pw), (dh, dw), self.groups)
