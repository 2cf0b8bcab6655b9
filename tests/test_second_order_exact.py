"""DARTS second order with ``estimator.hvp=exact``: B v' by double backward at the current weights.

On the tiny float64 supernet of conftest: the exact estimate equals the finite difference with a tiny
radius, equals the hypergradient written out with torch.autograd (and the total derivative of the
unrolled validation loss), leaves weights and BN statistics alone; the finite-difference default is
unchanged (equal to the central-difference formula written out by hand).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import TINY_SYNTH
from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.methods import ArchBatch, make_estimator
from nasrun.config.options import SecondOrderConf
from nasrun.search.loop import run_search

MU, WD, XI = 0.9, 3e-4, 0.05


def _rel(a, b) -> float:
    num = torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b)))
    return float(num / torch.sqrt(sum((y**2).sum() for y in b)))


def _batch(net, tiny_batches) -> ArchBatch:
    """A weight optimiser with a real momentum buffer (the virtual step must use it), after two SGD steps."""
    xt, yt, xv, yv = tiny_batches
    opt = torch.optim.SGD(net.weight_parameters(), lr=XI, momentum=MU, weight_decay=WD)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(net(xt), yt).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return ArchBatch(xt, yt, xv, yv, opt, XI)


class _Functional:
    """The supernet as a function of (weights, alphas) for the reference computations."""

    def __init__(self, net):
        self.net = net
        self.names = {id(p): n for n, p in net.named_parameters()}
        self.weights = net.weight_parameters()
        self.alphas = net.arch_parameters()

    def loss(self, weights, alphas, x, y):
        state = {self.names[id(p)]: t for p, t in zip(self.weights, weights)}
        state.update({self.names[id(p)]: t for p, t in zip(self.alphas, alphas)})
        state.update(dict(self.net.named_buffers()))
        return F.cross_entropy(functional_call(self.net, state, (x,)), y)


def _unrolled(f: _Functional, batch: ArchBatch):
    """w' = w - xi (g + wd w + mu buf), with g = dL_train/dw at w (a constant: no graph)."""
    w = [p.detach().clone() for p in f.weights]
    a = [p.detach().clone() for p in f.alphas]
    w_req = [t.clone().requires_grad_() for t in w]
    g = torch.autograd.grad(f.loss(w_req, a, batch.x_train, batch.y_train), w_req)
    bufs = [batch.weight_optimizer.state[p]["momentum_buffer"] for p in f.weights]
    return w, a, [wi - XI * (gi + WD * wi + MU * bi) for wi, gi, bi in zip(w, g, bufs)]


def _explicit_hypergradient(net, batch: ArchBatch) -> tuple[list, list]:
    """d_direct - xi * B(w) v', with B v' = d/d alpha [grad_w L_train(w, alpha) . v'] by torch.autograd.functional."""
    f = _Functional(net)
    w, a, w1 = _unrolled(f, batch)
    a_req = [t.clone().requires_grad_() for t in a]
    w1_req = [t.clone().requires_grad_() for t in w1]
    val = f.loss(w1_req, a_req, batch.x_val, batch.y_val)
    grads = torch.autograd.grad(val, a_req + w1_req)
    direct, v = list(grads[: len(a)]), list(grads[len(a):])

    def weight_grad_of_alphas(*alphas):
        ws = [t.clone().requires_grad_() for t in w]
        return torch.autograd.grad(f.loss(ws, list(alphas), batch.x_train, batch.y_train), ws, create_graph=True)

    _, bv = torch.autograd.functional.vjp(weight_grad_of_alphas, tuple(a), tuple(v))
    assert len(bv) == len(a)
    return direct, [d - XI * b for d, b in zip(direct, bv)]


def test_exact_matches_the_explicit_autograd_hypergradient(tiny_net, tiny_batches):
    batch = _batch(tiny_net, tiny_batches)
    weights = [w.detach().clone() for w in tiny_net.weight_parameters()]
    buffers = {n: b.clone() for n, b in tiny_net.named_buffers()}
    got = make_estimator(SecondOrderConf(hvp="exact"))(tiny_net, batch)
    # weights (bit for bit) and BN running statistics are as before
    assert all(torch.equal(w, b) for w, b in zip(tiny_net.weight_parameters(), weights))
    assert all(torch.equal(b, buffers[n]) for n, b in tiny_net.named_buffers())

    direct, want = _explicit_hypergradient(tiny_net, batch)
    assert _rel(got.grads, want) < 1e-10
    # the implicit term is visible: the test can tell second order from first order
    assert _rel(direct, want) > 1e-3
    assert set(got.stats) == {"g1_norm", "second_norm", "cosine"}


def test_exact_is_the_total_derivative_of_the_unrolled_validation_loss(tiny_net, tiny_batches):
    """The chain rule through w'(alpha): d/d alpha L_val(w - xi (mu m + g(alpha) + wd w), alpha)."""
    batch = _batch(tiny_net, tiny_batches)
    got = make_estimator(SecondOrderConf(hvp="exact"))(tiny_net, batch).grads
    f = _Functional(tiny_net)
    w = [p.detach().clone() for p in f.weights]
    a = [p.detach().clone().requires_grad_() for p in f.alphas]
    ws = [t.clone().requires_grad_() for t in w]
    g = torch.autograd.grad(f.loss(ws, a, batch.x_train, batch.y_train), ws, create_graph=True)
    bufs = [batch.weight_optimizer.state[p]["momentum_buffer"] for p in f.weights]
    w1 = [wi - XI * (MU * bi + gi + WD * wi) for wi, gi, bi in zip(w, g, bufs)]
    want = torch.autograd.grad(f.loss(w1, a, batch.x_val, batch.y_val), a)
    assert _rel(got, list(want)) < 1e-10


def test_exact_equals_finite_difference_with_a_tiny_radius(tiny_net, tiny_batches):
    batch = _batch(tiny_net, tiny_batches)
    exact = make_estimator(SecondOrderConf(hvp="exact"))(tiny_net, batch)
    fd = make_estimator(SecondOrderConf(hvp="finite_difference", fd_radius=1e-7))(tiny_net, batch)
    assert _rel(fd.grads, exact.grads) < 1e-5
    # and the implicit terms alone (the direct term is the same computation in both)
    direct = _explicit_hypergradient(tiny_net, batch)[0]
    second_fd = [g - d for g, d in zip(fd.grads, direct)]
    second_ex = [g - d for g, d in zip(exact.grads, direct)]
    assert _rel(second_fd, second_ex) < 1e-5


def test_finite_difference_default_is_the_central_difference_formula(tiny_net, tiny_batches):
    """The default path, written out by hand: d_direct - xi [dL_tr(w + e v')/da - dL_tr(w - e v')/da] / 2e."""
    assert SecondOrderConf().hvp == "finite_difference" and SecondOrderConf().fd_radius == 0.01
    batch = _batch(tiny_net, tiny_batches)
    got = make_estimator(SecondOrderConf())(tiny_net, batch).grads
    f = _Functional(tiny_net)
    w, a, w1 = _unrolled(f, batch)
    a_req = [t.clone().requires_grad_() for t in a]
    w1_req = [t.clone().requires_grad_() for t in w1]
    grads = torch.autograd.grad(f.loss(w1_req, a_req, batch.x_val, batch.y_val), a_req + w1_req)
    direct, v = grads[: len(a)], grads[len(a):]
    eps = 0.01 / (float(torch.sqrt(sum((t**2).sum() for t in v))) + 1e-12)
    side = []
    for sign in (1.0, -1.0):
        a_req = [t.clone().requires_grad_() for t in a]
        side.append(torch.autograd.grad(
            f.loss([wi + sign * eps * vi for wi, vi in zip(w, v)], a_req, batch.x_train, batch.y_train), a_req))
    want = [d - XI * (p - m) / (2 * eps) for d, p, m in zip(direct, *side)]
    assert _rel(got, want) < 1e-12


def test_hvp_option_is_validated_and_composes():
    with pytest.raises(ConfigError, match="estimator.hvp"):
        SecondOrderConf(hvp="approx")
    with pytest.raises(ConfigError, match="estimator.hvp"):
        to_typed(compose("search", ["method=darts_2nd", "estimator.hvp=approx"]))
    default = to_typed(compose("search", ["method=darts_2nd"]))
    assert default.estimator.hvp == "finite_difference" and default.estimator.fd_radius == 0.01
    assert to_typed(compose("search", ["method=darts_2nd", "estimator.hvp=exact"])).estimator.hvp == "exact"


def test_a_search_with_the_exact_product_runs(tmp_path: Path):
    cfg = to_typed(compose("search", [*TINY_SYNTH, "search.epochs=1", "method=darts_2nd", "estimator.hvp=exact"]))
    run_search(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "genotype.json").exists()
