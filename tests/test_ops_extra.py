"""The NASP, NAS-Bench-201 and R-DARTS S4 ops: shapes, parameter counts, and the seeded noise stream."""

import io

import pytest
import torch
from torch import nn

from nasrun.spaces import NOISE, OPS, PARAMETER_FREE_OPS, POOLING_OPS, Noise, NoiseSource
from nasrun.spaces.ops import Conv7x1_1x7, ConvKx1_1xK

NEW_OPS = [
    "conv_3x1_1x3", "conv_1x1", "conv_3x3", "max_pool_5x5", "max_pool_7x7",
    "nor_conv_1x1", "nor_conv_3x3", "noise",
]


@pytest.fixture(autouse=True)
def keep_noise_state():
    """Tests reseed the shared stream; give it back as it was."""
    saved = NOISE.state_dict()
    yield
    NOISE.load_state_dict(saved)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", NEW_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [False, True])
def test_new_op_shapes(name, stride, affine):
    C = 4
    op = OPS[name](C, stride, affine)
    y = op(torch.randn(2, C, 8, 8))
    assert y.shape == (2, C, 8 // stride, 8 // stride)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NEW_OPS)
@pytest.mark.parametrize("size", [7, 9])
def test_new_op_odd_sizes_round_up(name, size):
    # the same rule as the existing ops (and as strided slicing): ceil(H / stride)
    y = OPS[name](3, 2, True)(torch.randn(2, 3, size, size))
    ref = OPS["max_pool_3x3"](3, 2, True)(torch.randn(2, 3, size, size))
    assert y.shape == ref.shape == (2, 3, -(-size // 2), -(-size // 2))
    assert OPS[name](3, 1, True)(torch.randn(2, 3, size, size)).shape == (2, 3, size, size)


@pytest.mark.parametrize(
    "name, affine, expected",
    [
        # C = 4: a k x k conv C -> C has C*C*k*k weights; an affine BN adds gamma and beta (2*C)
        ("conv_1x1", True, 4 * 4 * 1 + 2 * 4),  # 24
        ("conv_1x1", False, 4 * 4 * 1),  # 16
        ("conv_3x3", True, 4 * 4 * 9 + 2 * 4),  # 152
        ("conv_3x3", False, 4 * 4 * 9),  # 144
        ("nor_conv_1x1", True, 4 * 4 * 1 + 2 * 4),  # 24
        ("nor_conv_3x3", True, 4 * 4 * 9 + 2 * 4),  # 152
        ("nor_conv_3x3", False, 4 * 4 * 9),  # 144
        # a 1x3 conv and a 3x1 conv, 4*4*3 each, then one BN
        ("conv_3x1_1x3", True, 2 * (4 * 4 * 3) + 2 * 4),  # 104
        ("conv_3x1_1x3", False, 2 * (4 * 4 * 3)),  # 96
        ("conv_7x1_1x7", True, 2 * (4 * 4 * 7) + 2 * 4),  # 232, unchanged by the generalisation
        ("max_pool_5x5", True, 0),
        ("max_pool_7x7", True, 0),
        ("noise", True, 0),
    ],
)
def test_parameter_counts_by_hand(name, affine, expected):
    for stride in (1, 2):  # the stride changes no weight shape
        assert n_params(OPS[name](4, stride, affine)) == expected


def test_conv_layout_and_padding():
    op = OPS["conv_3x1_1x3"](4, 2, True)
    assert isinstance(op, ConvKx1_1xK)
    convs = [m for m in op.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 3), (3, 1)]
    assert [c.stride for c in convs] == [(1, 2), (2, 1)]
    assert [c.padding for c in convs] == [(0, 1), (1, 0)]
    assert isinstance(op.op[0], nn.ReLU) and isinstance(op.op[-1], nn.BatchNorm2d)
    seven = OPS["conv_7x1_1x7"](4, 1, True)
    assert isinstance(seven, Conv7x1_1x7) and isinstance(seven, ConvKx1_1xK)
    assert [m.padding for m in seven.modules() if isinstance(m, nn.Conv2d)] == [(0, 3), (3, 0)]
    for name, k in (("nor_conv_1x1", 1), ("nor_conv_3x3", 3), ("conv_1x1", 1), ("conv_3x3", 3)):
        (conv,) = [m for m in OPS[name](4, 2, True).modules() if isinstance(m, nn.Conv2d)]
        assert conv.kernel_size == (k, k) and conv.padding == (k // 2, k // 2) and conv.stride == (2, 2)
        assert conv.bias is None


def test_pool_sets():
    assert {"max_pool_5x5", "max_pool_7x7"} <= POOLING_OPS
    assert {"max_pool_5x5", "max_pool_7x7", "noise"} <= PARAMETER_FREE_OPS
    assert POOLING_OPS <= PARAMETER_FREE_OPS <= set(OPS)
    assert OPS["max_pool_5x5"](1, 1, False).padding == 2
    assert OPS["max_pool_7x7"](1, 1, False).padding == 3


def test_nb201_avg_pool_excludes_padding():
    assert OPS["avg_pool_3x3"](4, 1, True).count_include_pad is False


def test_noise_same_seed_same_draws():
    op = OPS["noise"](3, 1, False)
    assert isinstance(op, Noise)
    x = torch.randn(2, 3, 5, 5)
    NOISE.seed(7)
    a = op(x)
    b = op(x)
    NOISE.seed(7)
    assert torch.equal(op(x), a) and torch.equal(op(x), b)
    assert not torch.equal(a, b)  # a fresh draw on every forward
    NOISE.seed(8)
    assert not torch.equal(op(x), a)


def test_noise_is_standard_normal():
    NOISE.seed(0)
    y = OPS["noise"](8, 1, False)(torch.zeros(16, 8, 16, 16))
    assert abs(float(y.mean())) < 0.05
    assert abs(float(y.std()) - 1.0) < 0.05


def test_noise_state_survives_weights_only_load():
    NOISE.seed(3)
    NOISE.randn((4,))
    buf = io.BytesIO()
    torch.save({"noise": NOISE.state_dict()}, buf)
    expected = NOISE.randn((2, 3, 4, 4))
    NOISE.seed(99)  # move the stream elsewhere before resuming
    buf.seek(0)
    NOISE.load_state_dict(torch.load(buf, weights_only=True)["noise"])
    assert torch.equal(NOISE.randn((2, 3, 4, 4)), expected)


def test_noise_sources_are_independent_and_dtype_agnostic():
    a, b = NoiseSource(5), NoiseSource()
    b.seed(5)
    assert torch.equal(a.randn((3, 3)), b.randn((3, 3)))
    # the stream is drawn in float32 whatever the dtype, so float64 runs see the same values
    a.seed(1)
    b.seed(1)
    assert torch.equal(a.randn((6,), torch.float64), b.randn((6,)).double())
    assert a.randn((2,), torch.float64).dtype == torch.float64


def test_noise_ignores_input_values():
    op = OPS["noise"](3, 1, True)
    NOISE.seed(11)
    a = op(torch.zeros(2, 3, 6, 6))
    NOISE.seed(11)
    b = op(torch.full((2, 3, 6, 6), 1e6))
    assert torch.equal(a, b)


@pytest.mark.parametrize("size", [8, 7])
def test_noise_stride_2_shape(size):
    x = torch.randn(2, 3, size, size)
    y = OPS["noise"](3, 2, False)(x)
    assert y.shape == x[:, :, ::2, ::2].shape
    assert y.dtype == x.dtype and y.device == x.device


def test_noise_in_autograd_graph():
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    w = torch.tensor([0.3, 0.7], requires_grad=True)
    noise, conv = OPS["noise"](4, 1, False), OPS["sep_conv_3x3"](4, 1, False)
    n = noise(x)
    assert not n.requires_grad
    (w[0] * n + w[1] * conv(x)).sum().backward()  # the mixed op's weighted sum
    assert w.grad is not None and float(w.grad[0]) == pytest.approx(float(n.sum()), rel=1e-5)
    assert x.grad is not None  # through the conv only
    x2 = torch.randn(2, 4, 6, 6, requires_grad=True)
    (w[0] * noise(x2)).sum().backward()
    assert x2.grad is None  # noise alone carries no gradient to its input


def test_noise_meta_device_draws_nothing():
    NOISE.seed(2)
    expected = NOISE.randn((3,))
    NOISE.seed(2)
    y = OPS["noise"](4, 2, False)(torch.empty(2, 4, 8, 8, device="meta"))
    assert y.shape == (2, 4, 4, 4) and y.device.type == "meta"
    assert torch.equal(NOISE.randn((3,)), expected)
