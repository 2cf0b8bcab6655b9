"""precision=bf16 and channels_last: what stays fp32 (BatchNorm, the loss, the estimators' second-order
terms), end-to-end runs on the CPU that record both keys, and the refused value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_OPS, TINY_RETRAIN, TINY_SYNTH
from nasrun.config.schema import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.methods import ArchObjective
from nasrun.methods.estimators import SecondOrder, amended_product, central_difference, exact_mixed
from nasrun.methods.estimators import finite_difference_mixed
from nasrun.train.precision import Numerics, full_precision
from nasrun.train.retrain import run_retrain
from nasrun.search.loop import run_search
from nasrun.supernet import SuperNet

BF16 = Numerics("bf16")


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b)) ** 0.5
    return num / max(sum(float(y.pow(2).sum()) for y in b) ** 0.5, 1e-30)


@pytest.fixture
def net32() -> SuperNet:
    """The tiny supernet of conftest in float32 (autocast leaves float64 alone)."""
    torch.manual_seed(0)
    net = SuperNet(C=4, num_classes=3, layers=3, ops=TINY_OPS, nodes=2, in_channels=1)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.randn_like(a) * 0.5)
    return BF16.prepare(net)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)


def _direction(net: SuperNet) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.randn(w.shape, generator=g) for w in net.weight_parameters()]


def _restore(net: SuperNet, saved: list[torch.Tensor]) -> None:
    """Put the weights back where a finite difference left them perturbed."""
    with torch.no_grad():
        for w, s in zip(net.weight_parameters(), saved):
            w.copy_(s)


def test_plain_forward_under_the_autocast_is_bf16(net32, batch):
    x, y = batch
    with BF16.autocast("cpu"):
        assert net32(x).dtype == torch.bfloat16
    fp32 = ArchObjective()(net32, x, y).loss.detach()
    bf16 = ArchObjective(BF16)(net32, x, y).loss.detach()
    assert bf16.dtype == torch.float32  # the loss of fp32 logits
    assert abs(float(bf16 - fp32)) > 1e-5 * abs(float(fp32))  # ... of a forward that really was bf16


def test_batchnorm_and_loss_are_fp32_under_bf16(net32, batch):
    x, y = batch
    seen = []
    bn = next(m for m in net32.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    with BF16.autocast("cpu"):
        net32(x)
    assert seen and all(pair == (torch.float32, torch.float32) for pair in seen)
    assert ArchObjective(BF16)(net32, x, y).total.dtype == torch.float32


@pytest.mark.parametrize("hvp", ["finite_difference", "exact"])
def test_amended_product_is_fp32_under_bf16(net32, batch, hvp):
    x, y = batch
    v = _direction(net32)
    fp32 = amended_product(net32, v, x, y, hvp, 0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the loop's autocast, entered around the step
        inside = amended_product(net32, v, x, y, hvp, 0.01)
    own = amended_product(net32, v, x, y, hvp, 0.01, ArchObjective(BF16))  # the run's bf16 objective
    assert _rel(inside, fp32) < 1e-6 and _rel(own, fp32) < 1e-6


def test_second_order_mixed_terms_are_fp32_under_bf16(net32, batch):
    x, y = batch
    weights, v = net32.weight_parameters(), _direction(net32)
    center = [w.detach().clone() for w in weights]
    exact = exact_mixed(net32, weights, v, x, y)
    fd = finite_difference_mixed(net32, weights, center, v, x, y, 0.01)
    _restore(net32, center)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        exact_bf16 = exact_mixed(net32, weights, v, x, y, ArchObjective(BF16))
        fd_bf16 = finite_difference_mixed(net32, weights, center, v, x, y, 0.01, ArchObjective(BF16))
        _restore(net32, center)
        # the same difference without full_precision: rounding noise, which is what the test guards against
        rounded = central_difference.__wrapped__(net32, weights, center, v, x, y, 0.01, net32.arch_parameters())
    assert _rel(fd_bf16, fd) < 1e-6 and _rel(exact_bf16, exact) < 1e-6
    assert _rel(rounded, fd) > 1e-2


def test_second_order_virtual_step_loss_is_fp32(net32, batch):
    x, y = batch
    fp32 = SecondOrder(objective=ArchObjective()).loss(net32, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = SecondOrder(objective=ArchObjective(BF16)).loss(net32, x, y)
    assert bf16.item() == pytest.approx(fp32.item(), rel=1e-6)
    with full_precision():  # the run's bf16 objective is fp32 inside
        assert ArchObjective(BF16)(net32, x, y).loss.item() == pytest.approx(fp32.item(), rel=1e-6)


def test_bf16_channels_last_search_and_retrain_on_cpu(tmp_path: Path):
    extra = ["precision=bf16", "channels_last=true"]
    search = run_search(to_typed(compose("search", [*TINY_SYNTH, "search.epochs=1", "method=amended", *extra])),
                        tmp_path / "search")
    assert search["status"] == "completed"
    retrain = run_retrain(to_typed(compose("retrain", [f"genotype={tmp_path / 'search'}", *TINY_RETRAIN, *extra])),
                          tmp_path / "retrain")
    assert retrain["status"] == "completed" and 0.0 <= retrain["test_acc"] <= 1.0
    for name in ("search", "retrain"):
        saved = json.loads((tmp_path / name / "result.json").read_text())
        assert saved["precision"] == "bf16" and saved["channels_last"] is True


def test_defaults_are_fp32_and_contiguous():
    cfg = to_typed(compose("search", TINY_SYNTH))
    assert cfg.precision == "fp32" and cfg.channels_last is False
    assert Numerics.of(cfg).record() == {"precision": "fp32", "channels_last": False}


def test_bad_precision_is_one_config_error_line():
    with pytest.raises(ConfigError) as info:
        to_typed(compose("search", [*TINY_SYNTH, "precision=fp16"]))
    message = str(info.value)
    assert "precision" in message and "fp16" in message and "fp32, bf16" in message and "\n" not in message
