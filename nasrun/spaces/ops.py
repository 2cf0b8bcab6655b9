"""Primitive operations of the DARTS-family cell spaces (quark0/darts ``cnn/operations.py`` and its forks).

Every op maps C channels to C channels; stride 2 halves the spatial size (rounding up).
``OPS[name](C, stride, affine)`` builds one. ``affine=False`` is what the search supernet
uses (its BN scales would otherwise compete with the architecture weights); evaluation
networks use ``affine=True``. All convolutions are bias-free because a BN follows each one.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.spaces.names import DARTS_OPS  # noqa: F401 - the DARTS op list lives with the op names

#: NAS-Bench-201's 5 ops; this order is the alpha column order of that space (D-X-Y/AutoDL-Projects).
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: Ops without learnable weights (counted when judging skip/pool-heavy "collapsed" cells).
PARAMETER_FREE_OPS: frozenset[str] = frozenset(
    {"none", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7", "avg_pool_3x3", "skip_connect", "noise"}
)


def drop_path(x: Tensor, p: float) -> Tensor:
    """Zero whole samples with probability ``p`` and rescale the survivors by ``1/(1-p)``.

    The expected value of the output equals ``x``, so nothing has to change at test time.
    The mask is drawn from torch's global RNG on ``x``'s device (seeded runs repeat).
    Out of place, so it is safe inside autograd graphs.
    """
    if p <= 0.0:
        return x
    keep = 1.0 - p
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
    mask.bernoulli_(keep)
    return x * mask / keep


class ReLUConvBN(nn.Module):
    """ReLU -> k x k conv -> BN: the standard pre-activation block (also the 1x1 preprocessing)."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two offset strided 1x1 convs, so no pixel is skipped.

    One conv sees the even pixels, the other the odd ones (input shifted by one); their
    outputs are concatenated along channels. Needs even height and width. An odd ``C_out``
    is split as ``C_out//2`` + the rest.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        half = C_out // 2
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, half, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out - half, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        out = torch.cat([strided_pointwise(self.conv_1, x), strided_pointwise(self.conv_2, x[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


def strided_pointwise(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)`` for a strided 1x1 conv. On a channels-last input it runs as the same conv with stride 1 on every
    stride-th pixel (the same terms): the CPU's oneDNN backward of a strided 1x1 conv on a channels-last input
    writes past its buffers on some CPUs (seen on AMD EPYC with torch 2.14), which corrupts the heap."""
    s = conv.stride
    plain = s == (1, 1) or conv.kernel_size != (1, 1) or conv.padding != (0, 0)
    if plain or not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
        return conv(x)
    return F.conv2d(x[:, :, ::s[0], ::s[1]], conv.weight, conv.bias, 1, 0, 1, conv.groups)


def strided_shape(x: Tensor, stride: int) -> tuple[int, int, int, int]:
    """The shape of ``x[:, :, ::stride, ::stride]`` (``ceil(H/stride)``), without slicing."""
    n, c, h, w = x.shape
    return n, c, -(-h // stride), -(-w // stride)


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape (``ceil(H/stride)``, like strided slicing).

    It allocates fresh zeros instead of multiplying the input by 0, so it builds no graph.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(strided_shape(x, self.stride))


class Identity(nn.Module):
    """``skip_connect`` at stride 1. A class of its own so drop path can recognise and spare it."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class SepConv(nn.Module):
    """Depthwise-separable conv applied twice (only the first one strided), as in DARTS."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """One dilated depthwise conv + pointwise conv: a large receptive field for few weights."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                C_in, C_in, kernel, stride=stride, padding=padding, dilation=dilation,
                groups=C_in, bias=False,
            ),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ConvKx1_1xK(nn.Module):
    """ReLU -> 1xk conv -> kx1 conv -> BN: a k x k receptive field for 2k weights instead of k^2.

    Each conv strides along its own axis, so the pair together halves both sides at stride 2.
    """

    def __init__(self, C: int, kernel: int, stride: int, affine: bool = True) -> None:
        super().__init__()
        pad = kernel // 2
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, kernel), stride=(1, stride), padding=(0, pad), bias=False),
            nn.Conv2d(C, C, (kernel, 1), stride=(stride, 1), padding=(pad, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Conv7x1_1x7(ConvKx1_1xK):
    """The k = 7 case (NASNet/AmoebaNet op), kept under its own name for existing callers."""

    def __init__(self, C: int, stride: int, affine: bool = True) -> None:
        super().__init__(C, 7, stride, affine=affine)


class NoiseSource:
    """The one random stream every ``noise`` op draws from, so a search can seed and checkpoint it.

    Draws are made in float32 on a CPU generator and then cast and moved, so the stream does not
    depend on the device or dtype: a run resumed elsewhere (or under AMP) sees the same noise, and a
    ``precision=fp64`` run gets the fp32 run's draws as float64 values.
    The state dict holds only a uint8 tensor, so it survives ``torch.load(weights_only=True)``.
    """

    def __init__(self, seed: int = 0) -> None:
        self._generator = torch.Generator(device="cpu")
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self._generator.manual_seed(seed)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        # a checkpoint loaded with a GPU map_location would hold the state on that device
        self._generator.set_state(state["generator"].cpu())

    def randn(
        self,
        shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """N(0, 1) of ``shape``; on the meta device (shape-only passes) nothing is drawn."""
        if device is not None and torch.device(device).type == "meta":
            return torch.empty(tuple(shape), dtype=dtype, device=device)
        out = torch.randn(tuple(shape), generator=self._generator, dtype=torch.float32)
        return out.to(device=device, dtype=dtype)


#: The module-level stream of the ``noise`` op; the search seeds it and saves its state.
NOISE = NoiseSource()


class Noise(nn.Module):
    """R-DARTS S4's ``noise`` op: fresh N(0, 1) of the output shape, independent of the input.

    The output is a new tensor outside the graph, so no gradient reaches the input; a mixed op's
    ``w * noise`` still passes gradient to ``w``. Drawn from ``NOISE`` on every forward, in
    training and evaluation alike (as the reference does).
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return NOISE.randn(strided_shape(x, self.stride), x.dtype, x.device)


def _skip(C: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)


OpFactory = Callable[[int, int, bool], nn.Module]

#: op name -> factory(C, stride, affine). The keys are the op vocabulary nasrun knows.
OPS: dict[str, OpFactory] = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(
        3, stride=stride, padding=1, count_include_pad=False
    ),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "sep_conv_7x7": lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    "conv_7x1_1x7": lambda C, stride, affine: Conv7x1_1x7(C, stride, affine=affine),
    # NASP (xujinfan/NASP-codes operations.py)
    "conv_3x1_1x3": lambda C, stride, affine: ConvKx1_1xK(C, 3, stride, affine=affine),
    "conv_1x1": lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine=affine),
    "conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine=affine),
    "max_pool_5x5": lambda C, stride, affine: nn.MaxPool2d(5, stride=stride, padding=2),
    "max_pool_7x7": lambda C, stride, affine: nn.MaxPool2d(7, stride=stride, padding=3),
    # NAS-Bench-201 (D-X-Y/AutoDL-Projects); its none, skip_connect and avg_pool_3x3 are the ops above
    "nor_conv_1x1": lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine=affine),
    "nor_conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine=affine),
    # R-DARTS S4 (automl/RobustDARTS)
    "noise": lambda C, stride, affine: Noise(stride),
}

#: Pooling ops; the search supernet follows them with a non-affine BN (quark0/darts ``cnn/model_search.py`` MixedOp).
POOLING_OPS: frozenset[str] = frozenset({"max_pool_3x3", "max_pool_5x5", "max_pool_7x7", "avg_pool_3x3"})
