"""Architecture-gradient estimators against exact math on a tiny float64 supernet."""

from __future__ import annotations

import pytest

import torch
import torch.nn.functional as F
from torch.func import functional_call

from nasrun.methods import ArchBatch, make_estimator
from nasrun.config.options import FirstOrderConf, SecondOrderConf


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b)))
    den = torch.sqrt(sum((y**2).sum() for y in b))
    return float(num / den)


def _sgd_with_momentum(net, lr=0.05, momentum=0.9, wd=3e-4, steps=2, batch=None):
    """An optimiser with a real momentum buffer (the virtual step must use it)."""
    opt = torch.optim.SGD(net.weight_parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    xt, yt = batch
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(xt), yt).backward()
        opt.step()
    return opt


@pytest.mark.smoke
def test_first_order_is_the_validation_gradient(tiny_net, tiny_batches):
    xt, yt, xv, yv = tiny_batches
    opt = torch.optim.SGD(tiny_net.weight_parameters(), lr=0.1)
    est = make_estimator(FirstOrderConf())
    got = est(tiny_net, ArchBatch(xt, yt, xv, yv, opt, 0.1)).grads
    want = torch.autograd.grad(F.cross_entropy(tiny_net(xv), yv), tiny_net.arch_parameters())
    assert _rel(got, list(want)) < 1e-12


@pytest.mark.smoke
def test_second_order_matches_autograd_of_the_unrolled_loss(tiny_net, tiny_batches):
    """d/d alpha of L_val(w - xi (mu m + grad L_tr(w, alpha) + lambda w), alpha), by double backward."""
    xt, yt, xv, yv = tiny_batches
    opt = _sgd_with_momentum(tiny_net, batch=(xt, yt))
    xi = 0.05
    weights = tiny_net.weight_parameters()
    alphas = tiny_net.arch_parameters()
    names = {id(p): n for n, p in tiny_net.named_parameters()}
    before = [w.detach().clone() for w in weights]
    buffers = {n: b.clone() for n, b in tiny_net.named_buffers()}

    # ReLU and max-pool kinks make a step of 0.01 in weight space too coarse for a 1e-4 check on a net this
    # small; a smaller radius checks the same formula (float64 keeps the rounding error far below 1e-4).
    est = make_estimator(SecondOrderConf(fd_radius=1e-6))
    got = est(tiny_net, ArchBatch(xt, yt, xv, yv, opt, xi)).grads

    # weights and BN statistics are exactly as before
    assert all(torch.equal(w, b) for w, b in zip(weights, before))
    assert all(torch.equal(b, buffers[n]) for n, b in tiny_net.named_buffers())

    g = torch.autograd.grad(F.cross_entropy(tiny_net(xt), yt), weights, create_graph=True)
    mu, wd = 0.9, 3e-4
    unrolled = {}
    for w, gi in zip(weights, g):
        m = opt.state[w]["momentum_buffer"]
        unrolled[names[id(w)]] = w - xi * (mu * m + gi + wd * w)
    for a in alphas:
        unrolled[names[id(a)]] = a
    state = {**unrolled, **dict(tiny_net.named_buffers())}
    val = F.cross_entropy(functional_call(tiny_net, state, (xv,)), yv)
    exact = list(torch.autograd.grad(val, alphas))
    assert _rel(got, exact) < 1e-4
    # and the second-order term is not negligible here, so the test can tell the estimators apart
    first = list(torch.autograd.grad(F.cross_entropy(tiny_net(xv), yv), alphas))
    assert _rel(first, exact) > 1e-3


def test_second_order_with_zero_step_is_first_order(tiny_net, tiny_batches):
    xt, yt, xv, yv = tiny_batches
    opt = torch.optim.SGD(tiny_net.weight_parameters(), lr=0.1, momentum=0.9)
    second = make_estimator(SecondOrderConf())(tiny_net, ArchBatch(xt, yt, xv, yv, opt, 0.0))
    first = make_estimator(FirstOrderConf())(tiny_net, ArchBatch(xt, yt, xv, yv, opt, 0.0))
    assert _rel(second.grads, first.grads) < 1e-12
