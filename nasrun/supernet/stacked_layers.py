"""The layout of a stacked population's tensors, and the stacking of its leaf layers.

Member m owns channel block m of every activation, ``(N, S*C, H, W)``; a conv becomes a grouped conv with one
group per member, a BN over ``S*C`` channels is per member, the classifier a batched matmul. The cells and the
network that compose these are in :mod:`nasrun.supernet.stacked`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.spaces.ops import FactorizedReduce, strided_pointwise
from nasrun.supernet.depthwise import DepthwiseConv2d

__all__ = ["stack_inputs", "member_losses", "member_loss_sum", "blocks", "member_slice", "cat_members",
           "channels_last", "same_structure", "stack_conv", "stack_bn", "StackedLinear", "StackedFactorizedReduce"]


def stack_inputs(xs: Tensor) -> Tensor:
    """``(S, N, C, H, W)`` member batches -> ``(N, S*C, H, W)``, member-major (one copy)."""
    S, N, C, H, W = xs.shape
    return xs.transpose(0, 1).reshape(N, S * C, H, W)


def member_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Each member's mean cross-entropy ``(S,)``; ``logits (N, S, K)``, ``targets (N, S)``."""
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(0)


def member_loss_sum(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over members of each member's mean cross-entropy (its gradient is every member's own)."""
    return member_losses(logits, targets).sum()


def blocks(x: Tensor, S: int) -> Tensor:
    """``(N, S*C, H, W)`` -> the view ``(N, S, C, H, W)``."""
    n, c, h, w = x.shape
    return x.view(n, S, c // S, h, w)


def member_slice(x: Tensor, S: int, start: int, stop: int) -> Tensor:
    """Channels ``start:stop`` of every member's block, member-major: ``(N, S*(stop-start), H, W)``."""
    n, _, h, w = x.shape
    return blocks(x, S)[:, :, start:stop].reshape(n, -1, h, w)


def cat_members(parts: Sequence[Tensor], S: int) -> Tensor:
    """Concatenate per-member channel blocks so the result stays member-major (and channels-last if the parts are)."""
    n, _, h, w = parts[0].shape
    if all(channels_last(p) for p in parts):
        # (N, H, W, S, C_i) -> (N, H, W, S, sum C_i): the same member-major order, laid out channels-last
        nhwc = [p.permute(0, 2, 3, 1).reshape(n, h, w, S, -1) for p in parts]
        return torch.cat(nhwc, dim=4).view(n, h, w, -1).permute(0, 3, 1, 2)
    return torch.cat([blocks(p, S) for p in parts], dim=2).view(n, -1, h, w)


def channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def same_structure(mods: Sequence[nn.Module], attrs: Sequence[str]) -> None:
    """Refuse members whose modules differ in a structural attribute."""
    for a in attrs:
        values = {repr(getattr(m, a)) for m in mods}
        if len(values) != 1:
            raise ValueError(f"members differ in {type(mods[0]).__name__}.{a}: {sorted(values)}")


def _cat_param(tensors: Sequence[Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.cat([t.detach() for t in tensors]).clone())


def stack_conv(convs: Sequence[nn.Conv2d]) -> nn.Conv2d:
    """One conv with ``S * groups`` groups: member m's output block m reads only its input block m."""
    same_structure(convs, ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                  "padding_mode"))
    c, S = convs[0], len(convs)
    if c.bias is not None or c.padding_mode != "zeros":
        raise ValueError("stacked convs support bias-free, zero-padded convs only")
    w = c.weight
    kind = DepthwiseConv2d if c.groups == c.in_channels == c.out_channels else nn.Conv2d
    out = kind(S * c.in_channels, S * c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
                    S * c.groups, bias=False, device=w.device, dtype=w.dtype)
    out.weight = _cat_param([m.weight for m in convs])
    return out


def stack_bn(bns: Sequence[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    """One BN over ``S*C`` channels: the statistics of channel ``m*C + c`` are member m's."""
    same_structure(bns, ("num_features", "eps", "momentum", "affine", "track_running_stats"))
    b, S = bns[0], len(bns)
    if b.track_running_stats and len({int(m.num_batches_tracked) for m in bns}) != 1:
        raise ValueError("members' BatchNorm num_batches_tracked differ (stacked BNs share one counter)")
    ref = b.running_mean if b.track_running_stats else b.weight
    out = nn.BatchNorm2d(S * b.num_features, b.eps, b.momentum, b.affine, b.track_running_stats,
                         device=ref.device, dtype=ref.dtype)
    if b.affine:
        out.weight = _cat_param([m.weight for m in bns])
        out.bias = _cat_param([m.bias for m in bns])
    if b.track_running_stats:
        with torch.no_grad():
            out.running_mean.copy_(torch.cat([m.running_mean for m in bns]))
            out.running_var.copy_(torch.cat([m.running_var for m in bns]))
            out.num_batches_tracked.copy_(b.num_batches_tracked)
    return out


class StackedLinear(nn.Module):
    """S classifiers at once: ``(N, S, F) -> (N, S, K)`` with weight ``(S, K, F)`` and bias ``(S, K)``."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        same_structure(layers, ("in_features", "out_features"))
        if any(m.bias is None for m in layers):
            raise ValueError("stacked classifier needs a bias (the SuperNet classifier has one)")
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())

    def forward(self, x: Tensor) -> Tensor:
        # (S, N, F) @ (S, F, K) -> (S, N, K): one batched matmul for all members
        return torch.baddbmm(self.bias.unsqueeze(1), x.transpose(0, 1), self.weight.transpose(1, 2)).transpose(0, 1)


class StackedFactorizedReduce(nn.Module):
    """FactorizedReduce of S members: both strided convs grouped, their halves joined member-major."""

    def __init__(self, frs: Sequence[FactorizedReduce]) -> None:
        super().__init__()
        self.S = len(frs)
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = stack_conv([m.conv_1 for m in frs])
        self.conv_2 = stack_conv([m.conv_2 for m in frs])
        self.bn = stack_bn([m.bn for m in frs])

    def forward(self, x: Tensor) -> Tensor:
        return self.after_relu(self.relu(x))

    def after_relu(self, x: Tensor) -> Tensor:
        """The op on the ReLU of its input (a stacked edge shares that ReLU among its ops)."""
        halves = [strided_pointwise(self.conv_1, x), strided_pointwise(self.conv_2, x[:, :, 1:, 1:])]
        return self.bn(cat_members(halves, self.S))
