"""The NAS-Bench-201 evaluation network: shapes, hand-counted parameters, edge validation, size figures."""

import pytest
import torch

from nasrun.nets import NB201Network, count_macs, count_parameters

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def parse_arch(arch: str) -> list[tuple[str, int, int]]:
    """``|op~src|`` groups split by ``+`` are target nodes 1, 2, 3 (NAS-Bench-201's arch string); test-only helper."""
    edges = []
    for target, group in enumerate(arch.split("+"), start=1):
        for token in group.strip("|").split("|"):
            op, src = token.split("~")
            edges.append((op, int(src), target))
    return edges


def conv_bn(c_in: int, c_out: int, k: int) -> int:
    """A bias-free k x k conv and an affine BN (gamma, beta)."""
    return c_in * c_out * k * k + 2 * c_out


def skeleton(C: int = 16, classes: int = 10) -> int:
    """Parameters outside the cells, by hand."""
    stem = 3 * C * 9 + 2 * C  # Conv3x3(3 -> 16): 432, BN: 32 -> 464

    def residual(c_in: int, c_out: int) -> int:
        return (
            conv_bn(c_in, c_out, 3)  # ReLUConvBN 3x3 stride 2
            + conv_bn(c_out, c_out, 3)  # ReLUConvBN 3x3 stride 1
            + c_in * c_out  # shortcut: AvgPool2d(2, 2) -> Conv1x1, no BN, no bias
        )

    # 16 -> 32: 4608 + 64 + 9216 + 64 + 512 = 14464; 32 -> 64: 18432 + 128 + 36864 + 128 + 2048 = 57600
    blocks = residual(C, 2 * C) + residual(2 * C, 4 * C)
    last_bn = 2 * 4 * C  # 128
    classifier = 4 * C * classes + classes  # Linear(64, 10): 650
    return stem + blocks + last_bn + classifier  # 464 + 72064 + 128 + 650 = 73306


def test_arch_helper():
    assert parse_arch(BEST) == [
        ("nor_conv_3x3", 0, 1),
        ("nor_conv_3x3", 0, 2), ("nor_conv_3x3", 1, 2),
        ("skip_connect", 0, 3), ("nor_conv_3x3", 1, 3), ("nor_conv_1x1", 2, 3),
    ]


def test_output_shape_and_interface():
    torch.manual_seed(0)
    net = NB201Network(parse_arch(BEST))
    net.drop_path_prob = 0.3  # accepted and ignored
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux is None
    assert net.auxiliary_enabled is False
    assert isinstance(net.auxiliary_note, str) and "auxiliary" in net.auxiliary_note
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32))[0].shape == (2, 10)


def test_best_cell_parameter_count_by_hand():
    # per cell at c channels: four nor_conv_3x3 (9c^2 + 2c each), one nor_conv_1x1 (c^2 + 2c),
    # one skip_connect (0) -> 37c^2 + 10c
    def cell(c: int) -> int:
        return 4 * conv_bn(c, c, 3) + conv_bn(c, c, 1)

    assert cell(16) == 9632 and cell(32) == 38208 and cell(64) == 152192
    cells = 5 * (cell(16) + cell(32) + cell(64))  # 5 * 200032 = 1000160
    expected = cells + skeleton()  # 1000160 + 73306
    assert expected == 1_073_466
    assert count_parameters(NB201Network(parse_arch(BEST), C=16, N=5, num_classes=10)) == 1_073_466


def test_all_conv3x3_cell_parameter_count():
    # six nor_conv_3x3 per cell: 5 * (14016 + 55680 + 221952) + 73306 = 1531546 (the benchmark's largest cell)
    arch = [("nor_conv_3x3", s, t) for _, s, t in parse_arch(BEST)]
    assert count_parameters(NB201Network(arch)) == 5 * sum(6 * conv_bn(c, c, 3) for c in (16, 32, 64)) + skeleton()
    assert count_parameters(NB201Network(arch)) == 1_531_546


def test_all_skip_cell_has_only_the_skeleton():
    net = NB201Network(parse_arch(ALL_SKIP))
    assert count_parameters(net) == skeleton() == 73_306
    assert net(torch.randn(2, 3, 32, 32))[0].shape == (2, 10)


def test_all_none_cell_runs():
    net = NB201Network(parse_arch(ALL_NONE))
    assert count_parameters(net) == skeleton()
    logits, _ = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_edge_order_does_not_matter():
    edges = parse_arch(BEST)
    a, b = NB201Network(edges), NB201Network(list(reversed(edges)))
    assert a.edges == b.edges == tuple(edges)


def test_count_macs_positive():
    macs = count_macs(NB201Network(parse_arch(BEST)), (3, 32, 32))
    assert isinstance(macs, int) and macs > 0
    assert count_macs(NB201Network(parse_arch(ALL_SKIP)), (3, 32, 32)) < macs


def test_other_sizes_and_channels():
    net = NB201Network(parse_arch(BEST), C=4, N=1, num_classes=7, in_channels=1)
    assert net(torch.randn(2, 1, 16, 16))[0].shape == (2, 7)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(2, 1, 14, 14))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda e: e[:5], "missing edge.*3<-2"),
        (lambda e: e + [e[0]], "1<-0 is given twice"),
        (lambda e: e[:5] + [("nor_conv_3x3", 0, 0)], "0<-0 is not a NAS-Bench-201 edge"),
        (lambda e: e[:5] + [("nor_conv_3x3", 3, 2)], "2<-3 is not a NAS-Bench-201 edge"),
        (lambda e: e[:5] + [("conv_5x5", 2, 3)], "unknown op 'conv_5x5' on edge 3<-2"),
        (lambda e: e[:5] + [("nor_conv_3x3", 2)], "not an .op_name, source, target. triple"),
        (lambda e: e[:5] + [("nor_conv_3x3", "2", 3)], "must be node numbers"),
        (lambda e: "nor_conv_3x3", "must be a sequence"),
    ],
)
def test_bad_edges(edit, match):
    with pytest.raises(ValueError, match=match):
        NB201Network(edit(parse_arch(BEST)))


def test_bad_sizes():
    with pytest.raises(ValueError, match="C=0"):
        NB201Network(parse_arch(BEST), C=0)
    with pytest.raises(ValueError, match="num_classes"):
        NB201Network(parse_arch(BEST), num_classes=0)
