"""The stacked supernet's CPU depthwise conv computes the plain conv: same outputs and gradients (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nasrun.supernet import depthwise
from nasrun.supernet.depthwise import DepthwiseConv2d, useful_taps

CASES = [(size, kernel, dilation, stride) for size in (2, 3, 4, 5, 8, 9, 16)
         for kernel, dilation in ((3, 1), (5, 1), (3, 2), (5, 2)) for stride in (1, 2)]


def _reads_input(size: int, kernel: int, stride: int, padding: int, dilation: int) -> list[bool]:
    """Per tap of one axis, whether it ever multiplies an input pixel: convolve ones with a one-hot kernel."""
    x = torch.ones(1, 1, 1, size, dtype=torch.float64)
    out = []
    for a in range(kernel):
        w = torch.zeros(1, 1, 1, kernel, dtype=torch.float64)
        w[..., a] = 1.0
        out.append(bool(F.conv2d(x, w, None, (1, stride), (0, padding), (1, dilation)).abs().sum() > 0))
    return out


@pytest.mark.parametrize("size,kernel,dilation,stride", CASES)
def test_dropped_taps_read_only_padding(size, kernel, dilation, stride):
    padding = dilation * (kernel - 1) // 2
    reads = _reads_input(size, kernel, stride, padding, dilation)
    cut = useful_taps(size, kernel, stride, padding, dilation)
    assert not any(reads[:cut]) and not any(reads[kernel - cut:])
    # the cut is as large as a symmetric cut can be: one more would drop a tap that reads the input
    assert cut == kernel // 2 or reads[cut] or reads[kernel - 1 - cut]


@pytest.mark.parametrize("size,kernel,dilation,stride", CASES)
def test_matches_the_plain_conv(size, kernel, dilation, stride):
    torch.manual_seed(size * 100 + kernel * 10 + dilation + stride)
    C, padding = 6, dilation * (kernel - 1) // 2
    conv = DepthwiseConv2d(C, C, kernel, stride, padding, dilation, C, bias=False).double()
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, C, size, size, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
        ours = conv(x)
        plain = F.conv2d(x, conv.weight, None, stride, padding, dilation, C)
        assert ours.shape == plain.shape
        torch.testing.assert_close(ours, plain, rtol=0, atol=1e-12)
        g = torch.randn_like(plain)
        ours_grads = torch.autograd.grad(ours, [x, conv.weight], g)
        plain_grads = torch.autograd.grad(plain, [x, conv.weight], g)
        for a, b in zip(ours_grads, plain_grads):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_takes_the_parity_form_only_where_it_pays(monkeypatch):
    calls = []
    real = depthwise._dilated_on_cpu
    monkeypatch.setattr(depthwise, "_dilated_on_cpu", lambda *a: calls.append(a[0].shape[-1]) or real(*a))
    conv = DepthwiseConv2d(4, 4, 5, 1, 4, 2, 4, bias=False)
    for size in (4, depthwise.PARITY_MIN_SIZE, 2 * depthwise.PARITY_MIN_SIZE):
        conv(torch.randn(2, 4, size, size))
    # at 4 pixels the outer taps only read padding and are dropped; the larger inputs take the parity form
    assert calls == [depthwise.PARITY_MIN_SIZE, 2 * depthwise.PARITY_MIN_SIZE]
