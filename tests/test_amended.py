"""Amended-DARTS against exact math on a tiny float64 supernet (finite differences vs double backward)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import TINY_SYNTH
from nasrun.config.compose import compose, to_typed
from nasrun.methods import ArchBatch, make_estimator
from nasrun.methods.estimators import amended_product, finite_difference_hvp
from nasrun.config.options import AmendedConf, FirstOrderConf
from nasrun.search.loop import run_search


def _rel(a, b) -> float:
    num = torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b)))
    return float(num / torch.sqrt(sum((y**2).sum() for y in b)))


def _batch(net, tiny_batches) -> ArchBatch:
    xt, yt, xv, yv = tiny_batches
    return ArchBatch(xt, yt, xv, yv, torch.optim.SGD(net.weight_parameters(), lr=0.1), 0.1)


def test_hvp_by_finite_differences_matches_the_explicit_hessian(tiny_net, tiny_batches):
    """H v on the classifier block: torch.autograd.functional.hessian of the training loss as the reference."""
    xt, yt, _, _ = tiny_batches
    names = dict((id(p), n) for n, p in tiny_net.named_parameters())
    weights = tiny_net.weight_parameters()
    block = [i for i, w in enumerate(weights) if names[id(w)].startswith("classifier")]
    assert block, "the supernet has a classifier block"
    g = torch.Generator().manual_seed(3)
    v = [torch.randn(w.shape, generator=g, dtype=w.dtype) if i in block else torch.zeros_like(w)
         for i, w in enumerate(weights)]
    saved = [w.detach().clone() for w in weights]
    fd = finite_difference_hvp(tiny_net, weights, saved, v, xt, yt, radius=0.01)
    with torch.no_grad():
        for w, s in zip(weights, saved):
            w.copy_(s)

    block_params = [weights[i] for i in block]
    sizes = [p.numel() for p in block_params]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        state = {names[id(p)]: part.view_as(p) for p, part in zip(block_params, parts)}
        return F.cross_entropy(functional_call(tiny_net, state, (xt,)), yt)

    flat = torch.cat([p.detach().reshape(-1) for p in block_params])
    hessian = torch.autograd.functional.hessian(loss_of, flat)
    exact = hessian @ torch.cat([v[i].reshape(-1) for i in block])
    got = torch.cat([fd[i].reshape(-1) for i in block])
    assert float((got - exact).norm() / exact.norm()) < 1e-4


def test_finite_difference_chain_matches_double_backward(tiny_net, tiny_batches):
    xt, yt, xv, yv = tiny_batches
    weights = tiny_net.weight_parameters()
    v = list(torch.autograd.grad(F.cross_entropy(tiny_net(xv), yv), weights))
    exact = amended_product(tiny_net, v, xt, yt, "exact", 0.01)
    # ReLU and max-pool kinks make a 0.01 step too coarse for a 1e-4 check on a net this small;
    # the same formula with a smaller radius is exact to far below 1e-4 in float64.
    fd = amended_product(tiny_net, v, xt, yt, "finite_difference", 1e-6)
    assert _rel(fd, exact) < 1e-4
    # the product is not trivially zero
    assert float(torch.sqrt(sum((e**2).sum() for e in exact))) > 1e-6


def test_exact_and_finite_difference_estimators_agree_on_one_step(tiny_net, tiny_batches):
    batch = _batch(tiny_net, tiny_batches)
    exact = make_estimator(AmendedConf(eta=1.0, hvp="exact"))(tiny_net, batch)
    fd = make_estimator(AmendedConf(eta=1.0, hvp="finite_difference", fd_radius=1e-6))(
        tiny_net, batch)
    assert _rel(fd.grads, exact.grads) < 1e-4
    assert set(exact.stats) == {"g1_norm", "second_norm", "cosine"}


def test_estimate_is_affine_in_eta_and_leaves_weights_and_bn_alone(tiny_net, tiny_batches):
    batch = _batch(tiny_net, tiny_batches)
    before = [w.detach().clone() for w in tiny_net.weight_parameters()]
    est = {eta: make_estimator(AmendedConf(eta=eta, hvp="exact"))(tiny_net, batch).grads
           for eta in (0.0, 0.5, 1.0)}
    mid = [(a + b) / 2 for a, b in zip(est[0.0], est[1.0])]
    assert _rel(est[0.5], mid) < 1e-10
    first = make_estimator(FirstOrderConf())(tiny_net, batch).grads
    assert _rel(est[0.0], first) == 0.0
    buffers = {n: b.clone() for n, b in tiny_net.named_buffers()}
    make_estimator(AmendedConf(eta=1.0))(tiny_net, batch)
    assert all(torch.equal(w, b) for w, b in zip(tiny_net.weight_parameters(), before))
    # only the validation pass (as in first order) may move BN statistics; the products do not
    make_estimator(FirstOrderConf())(tiny_net, batch)
    after_first = {n: b.clone() for n, b in tiny_net.named_buffers()}
    for n, b in tiny_net.named_buffers():
        b.copy_(buffers[n])
    make_estimator(AmendedConf(eta=1.0))(tiny_net, batch)
    make_estimator(FirstOrderConf())(tiny_net, batch)
    for n, b in tiny_net.named_buffers():
        assert torch.equal(b, after_first[n]), n


def test_non_obtuse_angle_when_hessian_is_a_multiple_of_identity():
    """With H = cI the amended term is a positive multiple of the exact indirect term (the only case tested)."""
    torch.manual_seed(0)
    c, eta = 2.5, 0.3
    B = torch.randn(3, 5, dtype=torch.float64)
    v = torch.randn(5, dtype=torch.float64)
    H = c * torch.eye(5, dtype=torch.float64)
    g2 = -B @ torch.linalg.solve(H, v)
    g2_amended = -eta * B @ (H @ v)
    assert float(g2 @ g2_amended) >= 0
    torch.testing.assert_close(g2_amended, eta * c * c * g2)


def test_eta_zero_reproduces_first_order_darts(tmp_path: Path):
    common = [*TINY_SYNTH, "search.epochs=2", "seed=7"]
    darts = run_search(to_typed(compose("search", [*common, "method=darts"])), tmp_path / "darts")
    amended = run_search(to_typed(compose("search", [*common, "method=amended", "estimator.eta=0"])),
                         tmp_path / "amended")
    a, b = np.load(tmp_path / "darts" / "alphas.npz"), np.load(tmp_path / "amended" / "alphas.npz")
    np.testing.assert_array_equal(a["normal"], b["normal"])
    np.testing.assert_array_equal(a["reduce"], b["reduce"])
    wa = torch.load(tmp_path / "darts" / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "amended" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert darts["genotype"] == amended["genotype"]


def test_amended_search_logs_diagnostics(tmp_path: Path):
    cfg = to_typed(compose("search", [*TINY_SYNTH, "search.epochs=1", "method=amended", "estimator.eta=0.5"]))
    run_search(cfg, tmp_path / "run")
    import json

    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("g1_norm", "second_norm", "cosine", "skip_normal", "skip_reduce", "param_free_normal",
                "param_free_reduce", "alpha_entropy_normal", "alpha_entropy_reduce"):
        assert key in row, key
    assert row["second_norm"] > 0 and -1.0 <= row["cosine"] <= 1.0
