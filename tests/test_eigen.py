"""The dominant architecture-Hessian eigenvalue: against the dense Hessian, and leaving the search untouched."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_OPS
from nasrun.search.eigen import dominant_eigenvalue
from nasrun.methods.alpha_maps import Argmax
from nasrun.supernet import SuperNet


def _net(**kwargs) -> SuperNet:
    torch.manual_seed(0)
    net = SuperNet(C=2, num_classes=3, layers=3, ops=TINY_OPS, nodes=2, in_channels=1, **kwargs).double()
    with torch.no_grad():  # away from uniform, so the Hessian has structure
        for a in net.arch_parameters():
            a.copy_(torch.randn_like(a) * 0.5)
    return net


def _batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g))
            for _ in range(n)]


def _warm_bn(net: SuperNet, batches) -> None:
    """A few train-mode forwards, so the running statistics differ from their (0, 1) defaults."""
    net.train()
    with torch.no_grad():
        for x, _ in batches:
            net(x)


def _dense_hessian(net: SuperNet, batches) -> torch.Tensor:
    """d^2 L / d alpha^2 of the mean cross-entropy in eval mode, from a flat alpha vector via functional_call."""
    ids = {id(a) for a in net.arch_parameters()}
    named = [(name, p) for name, p in net.named_parameters() if id(p) in ids]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss(vec: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, p in named:
            params[name] = vec[start : start + p.numel()].view_as(p)
            start += p.numel()
        # forward(x, mix=None) takes the mixing weights from the swapped-in alphas
        return sum(F.cross_entropy(torch.func.functional_call(net, params, (x,)), y) for x, y in batches) / len(batches)

    net.eval()
    return torch.autograd.functional.hessian(loss, flat)


def test_matches_the_dense_hessian():
    net, batches = _net(), _batches()
    _warm_bn(net, batches)
    H = _dense_hessian(net, batches)
    torch.testing.assert_close(H, H.T)
    eigs = torch.linalg.eigvalsh(H)
    expected = float(eigs[eigs.abs().argmax()])
    assert H.shape == (40, 40)  # 2 kinds x 5 edges x 4 ops
    assert eigs[0] < 0 < eigs[-1] and expected < 0  # indefinite, and the dominant one is negative here
    out = dominant_eigenvalue(net, batches, iters=200, tol=1e-10)
    assert abs(out["eigenvalue"] - expected) / abs(expected) < 1e-4
    assert 1 <= out["iterations"] <= 200
    assert out["residual"] < 1e-2


def test_leaves_the_search_state_untouched():
    net, batches = _net(), _batches()
    _warm_bn(net, batches)
    net.train()
    net.cells[0].eval()  # a mixed mode survives too
    modes = [m.training for m in net.modules()]
    params = [p.detach().clone() for p in net.parameters()]
    buffers = {name: b.clone() for name, b in net.named_buffers()}
    assert any("running_mean" in name for name in buffers) and any("running_var" in name for name in buffers)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    dominant_eigenvalue(net, batches, iters=5)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in net.modules()] == modes
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), params))
    assert all(torch.equal(b, buffers[name]) for name, b in net.named_buffers())
    assert all(p.grad is None for p in net.parameters())


def test_same_seed_same_value_and_seed_matters():
    net, batches = _net(), _batches()
    a = dominant_eigenvalue(net, batches, iters=3, seed=7)
    b = dominant_eigenvalue(net, batches, iters=3, seed=7)
    c = dominant_eigenvalue(net, batches, iters=3, seed=8)
    assert a == b  # identical floats, not just close
    assert a["iterations"] == 3 and a["eigenvalue"] != c["eigenvalue"]  # 3 steps from different starts differ


@pytest.mark.parametrize("kwargs", [{"edge_norm": True}, {"alpha_map": Argmax()}], ids=["edge_norm", "argmax"])
def test_edge_norm_and_argmax(kwargs):
    net, batches = _net(**kwargs), _batches()
    if "edge_norm" in kwargs:
        assert len(net.arch_parameters()) == 4  # the betas are in the Hessian
    a = dominant_eigenvalue(net, batches, iters=10, seed=3)
    b = dominant_eigenvalue(net, batches, iters=10, seed=3)
    assert a == b
    assert math.isfinite(a["eigenvalue"]) and a["eigenvalue"] != 0.0 and math.isfinite(a["residual"])


def test_edge_norm_betas_enter_the_hessian():
    """With betas the dense Hessian is over alphas and betas together, and the estimate matches it."""
    net, batches = _net(edge_norm=True), _batches(1)
    H = _dense_hessian(net, batches)
    assert H.shape == (50, 50)  # + 2 kinds x 5 edge betas
    eigs = torch.linalg.eigvalsh(H)
    expected = float(eigs[eigs.abs().argmax()])
    out = dominant_eigenvalue(net, batches, iters=300, tol=1e-12)
    assert abs(out["eigenvalue"] - expected) / abs(expected) < 1e-4


def test_rejects_empty_batches():
    with pytest.raises(ValueError, match="at least one"):
        dominant_eigenvalue(_net(), [])
