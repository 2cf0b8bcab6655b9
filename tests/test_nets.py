"""Evaluation network: the 3.3M DARTS_V2 figure, forward shapes, auxiliary head, drop path, MACs."""

import time

import pytest
import torch

from nasrun.errors import ConfigError
from nasrun.genotype.genotype import PUBLISHED, Genotype
from nasrun.nets import Cell, NetworkCIFAR, count_macs, count_parameters
from nasrun.spaces import Identity

DARTS_V2 = PUBLISHED["DARTS_V2"]


@pytest.fixture(scope="module")
def darts_v2_full():
    torch.manual_seed(0)
    return NetworkCIFAR(DARTS_V2, C=36, num_classes=10, layers=20, auxiliary=True)


def test_darts_v2_parameter_count(darts_v2_full):
    n = count_parameters(darts_v2_full)
    n_aux = count_parameters(darts_v2_full, include_auxiliary=True)
    print(f"\nDARTS_V2 C=36 20 cells: {n} parameters without aux, {n_aux} with aux")
    assert 3.25e6 <= n < 3.35e6  # the published 3.3M
    assert n == 3_349_342  # measured by nasrun; guards against wiring regressions
    assert n_aux > n


def test_darts_v2_macs(darts_v2_full):
    darts_v2_full.train()
    start = time.perf_counter()
    macs = count_macs(darts_v2_full, (3, 32, 32))
    print(f"\nDARTS_V2 multiply-adds at 32x32: {macs} ({time.perf_counter() - start:.2f} s)")
    assert 520e6 <= macs <= 540e6
    assert darts_v2_full.training  # mode restored
    assert all(m.training for m in darts_v2_full.modules())


def tiny(genotype=DARTS_V2, auxiliary=True, in_channels=3, input_size=32, layers=3, C=4):
    torch.manual_seed(0)
    return NetworkCIFAR(genotype, C=C, num_classes=5, layers=layers, auxiliary=auxiliary,
                        in_channels=in_channels, input_size=input_size)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_forward_shapes_with_aux(name):
    net = tiny(PUBLISHED[name])
    assert net.auxiliary_enabled and net.auxiliary_note is None
    net.train()
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5) and aux.shape == (2, 5)
    net.eval()
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5) and aux is None


def test_forward_without_aux():
    net = tiny(auxiliary=False).train()
    assert not net.auxiliary_enabled and net.auxiliary_note is None
    assert not any("auxiliary" in n for n, _ in net.named_parameters())
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5) and aux is None


def test_aux_disabled_for_small_maps():
    net = tiny(in_channels=1, input_size=8).train()
    assert not net.auxiliary_enabled
    assert "8x8 input" in net.auxiliary_note and "2x2" in net.auxiliary_note
    logits, aux = net(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 5) and aux is None
    assert not tiny(input_size=28).auxiliary_enabled


def test_aux_adapts_to_larger_maps():
    net = tiny(input_size=64).train()
    assert net.auxiliary_enabled
    _, aux = net(torch.randn(2, 3, 64, 64))
    assert aux.shape == (2, 5)


def test_input_size_must_allow_two_reductions():
    with pytest.raises(ConfigError, match="input_size=30 .*divisible by 4"):
        tiny(input_size=30)


def test_reduction_positions():
    net = tiny(layers=8)
    assert [i for i, c in enumerate(net.cells) if c.reduction] == [2, 5]


def test_drop_path_only_in_training():
    net = tiny()
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    base = net(x)[0]
    net.drop_path_prob = 0.5
    assert torch.equal(net(x)[0], base)
    net.train()
    net.drop_path_prob = 0.0
    torch.manual_seed(1)
    a = net(x)[0]
    torch.manual_seed(1)
    assert torch.equal(net(x)[0], a)
    net.drop_path_prob = 0.5
    torch.manual_seed(1)
    assert not torch.allclose(net(x)[0], a)


def test_drop_path_spares_identity():
    all_skip = Genotype(normal=(("skip_connect", 0), ("skip_connect", 1)) * 4, normal_concat=(2, 3, 4, 5),
                        reduce=DARTS_V2.reduce, reduce_concat=(2, 3, 4, 5))
    cell = Cell(all_skip.cells["normal"], 4, 8, 8, 4, reduction=False, reduction_prev=False)
    assert all(isinstance(op, Identity) for op in cell.ops)
    cell.train()
    s0, s1 = torch.randn(3, 8, 4, 4), torch.randn(3, 8, 4, 4)
    assert torch.equal(cell(s0, s1, 0.9), cell(s0, s1, 0.0))


def test_count_macs_small_and_stable():
    net = tiny().train()
    a = count_macs(net, (3, 32, 32))
    b = count_macs(net, (1, 3, 32, 32))
    assert a == b > 0
    assert net.training
    with pytest.raises(ValueError):
        count_macs(net, (2, 3, 32, 32))


def test_float64_forward():
    net = tiny(in_channels=1, input_size=8).double().train()
    net.drop_path_prob = 0.2
    logits, _ = net(torch.randn(2, 1, 8, 8, dtype=torch.float64))
    assert logits.dtype == torch.float64
