"""Primitive ops: shapes at stride 1 and 2, the zero op, FactorizedReduce, drop path."""

import pytest
import torch

from nasrun.spaces import DARTS_OPS, OPS, FactorizedReduce, Identity, ReLUConvBN, Zero, drop_path

ALL_OPS = sorted(OPS)


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 16])
@pytest.mark.parametrize("affine", [False, True])
def test_op_output_shape(name, stride, size, affine):
    C = 4
    op = OPS[name](C, stride, affine)
    x = torch.randn(2, C, size, size)
    y = op(x)
    assert y.shape == (2, C, size // stride, size // stride)
    assert torch.isfinite(y).all()


def test_darts_ops_are_known_and_match_config():
    from nasrun.config.schema import DARTS_PRIMITIVES

    assert set(DARTS_OPS) <= set(OPS)
    assert DARTS_OPS == tuple(DARTS_PRIMITIVES)


@pytest.mark.parametrize("stride", [1, 2])
def test_none_is_zeros(stride):
    x = torch.randn(2, 4, 7, 7)
    y = OPS["none"](4, stride, False)(x)
    assert isinstance(OPS["none"](4, stride, False), Zero)
    assert y.shape == (2, 4, -(-7 // stride), -(-7 // stride))  # ceil, like strided slicing
    assert torch.count_nonzero(y) == 0
    assert y.dtype == x.dtype


def test_skip_connect_identity_and_reduce():
    x = torch.randn(2, 4, 8, 8)
    assert isinstance(OPS["skip_connect"](4, 1, True), Identity)
    assert torch.equal(OPS["skip_connect"](4, 1, True)(x), x)
    assert isinstance(OPS["skip_connect"](4, 2, True), FactorizedReduce)


@pytest.mark.parametrize("C_out", [4, 6, 5])
def test_factorized_reduce_halves(C_out):
    fr = FactorizedReduce(3, C_out, affine=True)
    y = fr(torch.randn(2, 3, 16, 16))
    assert y.shape == (2, C_out, 8, 8)


def test_convs_have_no_bias_and_affine_flag():
    for name in ALL_OPS:
        for affine in (False, True):
            op = OPS[name](4, 1, affine)
            for m in op.modules():
                if isinstance(m, torch.nn.Conv2d):
                    assert m.bias is None, name
                if isinstance(m, torch.nn.BatchNorm2d):
                    assert m.affine == affine, name


def test_avg_pool_excludes_padding():
    # With count_include_pad=False a constant image stays constant at the borders.
    y = OPS["avg_pool_3x3"](1, 1, False)(torch.ones(1, 1, 4, 4))
    assert torch.allclose(y, torch.ones_like(y))


def test_relu_conv_bn_shape():
    y = ReLUConvBN(3, 5, 3, 2, 1, affine=False)(torch.randn(2, 3, 8, 8))
    assert y.shape == (2, 5, 4, 4)


def test_drop_path_keeps_or_zeroes_whole_samples():
    torch.manual_seed(0)
    x = torch.ones(64, 3, 2, 2)
    y = drop_path(x, 0.5)
    per_sample = y.flatten(1)
    for row in per_sample:
        assert torch.all(row == 0) or torch.allclose(row, torch.full_like(row, 2.0))
    assert 0 < int((per_sample[:, 0] == 0).sum()) < 64
    assert drop_path(x, 0.0) is x


def test_drop_path_is_seeded_and_differentiable():
    x = torch.randn(16, 2, 2, 2, requires_grad=True)
    torch.manual_seed(3)
    a = drop_path(x, 0.3)
    torch.manual_seed(3)
    b = drop_path(x, 0.3)
    assert torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("size", [8, 6])
def test_factorized_reduce_channels_last_is_the_plain_computation(size):
    """On a channels-last input the strided 1x1 convs run on every other pixel: the same values and gradients."""
    torch.manual_seed(0)
    op = FactorizedReduce(4, 6).double()
    x = torch.randn(3, 4, size, size, dtype=torch.float64)
    outs = []
    for layout in (torch.contiguous_format, torch.channels_last):
        xi = x.contiguous(memory_format=layout).requires_grad_()
        y = op(xi)
        grads = torch.autograd.grad(y.square().sum(), [xi, op.conv_1.weight, op.conv_2.weight])
        outs.append((y, *grads))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_factorized_reduce_channels_last_backward_leaves_the_heap_intact():
    """oneDNN's backward of a strided 1x1 conv on a channels-last input corrupts the heap on some CPUs (an AMD
    EPYC with torch 2.14 aborts within a few steps); FactorizedReduce must not take that path. In a subprocess,
    so a corruption fails this test instead of the session."""
    import subprocess
    import sys

    code = ("import torch; from nasrun.spaces import FactorizedReduce\n"
            "torch.set_num_threads(1); op = FactorizedReduce(4, 4)\n"
            "for _ in range(300):\n"
            "    x = torch.randn(16, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()\n"
            "    op(x).sum().backward(); junk = [torch.empty(100 + j) for j in range(100)]\n"
            "print('intact')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "intact", proc.stderr[-500:]
