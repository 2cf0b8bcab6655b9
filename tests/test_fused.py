"""The fused mixed edge (supernet.fused): the plain edge's parameters and buffers, the plain edge's results.

Float64 tiny supernets, plain and fused from one state dict: logits, loss, every weight and alpha
gradient and the BN running statistics agree to 1e-10 (relative), in train and eval mode, with and
without partial channels, on the DARTS, S5 and R-DARTS S1 spaces, with the CPU layouts (channels-last,
dilated convs as dilation-1 convs on parity phases) and without (the path other devices take).
Then two short float32 searches on digits, plain and fused, end at the same genotype and alphas.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nasrun.supernet.fused as fused_module
from conftest import TINY_SEARCH
from nasrun.config import DARTS_PRIMITIVES, compose, to_typed
from nasrun.search import run_search
from nasrun.spaces.space import Space
from nasrun.supernet import MixedOp, SuperNet
from nasrun.supernet.fused import FusedMixedOp

TOL = 1e-10


def _space(name: str) -> Space | None:
    if name == "darts":
        return None
    return Space(to_typed(compose("search", [f"space={name}"])).space)


def _net(space: str, fused: bool, K: int = 1) -> SuperNet:
    torch.manual_seed(0)
    kw = dict(ops=DARTS_PRIMITIVES, nodes=2) if space == "darts" else dict(space=_space(space))
    net = SuperNet(C=4, num_classes=3, layers=3, in_channels=1, partial_channels=K, fused=fused, **kw).double()
    with torch.no_grad():  # alphas away from uniform, so every term of the alpha gradient shows
        for a in net.arch_parameters():
            a.copy_(torch.randn_like(a))
    return net


def _pair(space: str, K: int = 1) -> tuple[SuperNet, SuperNet]:
    plain, fused = _net(space, False, K), _net(space, True, K)
    fused.load_state_dict(plain.state_dict(), strict=True)
    return plain, fused


def _batch(size: int = 8, n: int = 6):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, size, size, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _close(a: torch.Tensor, b: torch.Tensor, what: str, tol: float = TOL, floor: float = 1e-300) -> None:
    """Max difference <= tol * the larger max magnitude (>= ``floor``: for values zero up to rounding)."""
    a, b = a.detach(), b.detach()
    scale = max(float(a.abs().max()), float(b.abs().max()), floor)
    err = float((a - b).abs().max()) / scale
    assert err <= tol, f"{what}: relative difference {err:.3g}"


def _loss_and_grads(net: SuperNet, x, y):
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    names = [n for n, _ in net.named_parameters()]
    grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    return logits, loss, dict(zip(names, grads))


@pytest.fixture(params=["cpu", "generic"])
def layout(request, monkeypatch):
    """Both fused code paths: the CPU layouts, and the generic one (what a GPU runs), forced on the CPU."""
    if request.param == "generic":
        monkeypatch.setattr(fused_module, "_cpu_layout", lambda x: False)
    return request.param


def test_only_mixed_edges_are_fused_and_names_match():
    plain, fused = _pair("darts")
    assert sum(isinstance(m, FusedMixedOp) for m in fused.modules()) == sum(
        isinstance(m, MixedOp) for m in plain.modules()) > 0
    assert not any(isinstance(m, FusedMixedOp) for m in plain.modules())
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in fused.named_parameters()]
    sp, sf = plain.state_dict(), fused.state_dict()
    assert list(sp) == list(sf)
    assert all(sp[k].shape == sf[k].shape and sp[k].dtype == sf[k].dtype for k in sp)


@pytest.mark.parametrize("space", ["darts", "s5", "rdarts_s1"])
@pytest.mark.parametrize("K", [1, 2])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_fused_equals_plain(space, K, train, layout):
    plain, fused = _pair(space, K)
    x, y = _batch()
    if not train:  # running statistics away from their initial values first
        with torch.no_grad():
            plain(x), fused(x)
    plain.train(train), fused.train(train)
    lp, Lp, gp = _loss_and_grads(plain, x, y)
    lf, Lf, gf = _loss_and_grads(fused, x, y)
    _close(lp, lf, "logits")
    _close(Lp, Lf, "loss")
    assert gp.keys() == gf.keys()
    for name in gp:
        if gp[name] is None or gf[name] is None:
            assert gp[name] is None and gf[name] is None, name
            continue
        _close(gp[name], gf[name], f"gradient of {name}")
    alpha_names = [n for n, _ in plain.named_parameters() if n.startswith("alphas_")]
    assert alpha_names and all(gp[n] is not None and gp[n].abs().max() > 0 for n in alpha_names)
    bp, bf = dict(plain.named_buffers()), dict(fused.named_buffers())
    assert bp.keys() == bf.keys()
    for name in bp:
        if bp[name].is_floating_point():
            # running means of zero-mean inputs are zero up to rounding: an absolute 1e-12 there
            _close(bp[name], bf[name], f"buffer {name}", 1e-12, floor=1.0)
        else:
            assert torch.equal(bp[name], bf[name]), name


def test_fused_path_runs_and_running_statistics_follow():
    """The fused forward really runs (the BN buffers are views into one tensor per fused BN), and it moves the
    per-op buffers exactly as the plain forward moves them, num_batches_tracked included."""
    plain, fused = _pair("darts")
    edges = [m for m in fused.modules() if isinstance(m, FusedMixedOp)]
    assert all(e._fusable and e._linked() for e in edges)
    x, _ = _batch()
    for _ in range(2):
        plain(x), fused(x)
    sp, sf = plain.state_dict(), fused.state_dict()
    moved = [k for k in sp if k.endswith("running_mean") and not torch.equal(sp[k], torch.zeros_like(sp[k]))]
    assert len(moved) > 20
    for k in sp:
        if k.endswith("num_batches_tracked"):
            assert int(sp[k]) == int(sf[k]) == 2, k
        else:
            _close(sp[k], sf[k], k, 1e-12, floor=1.0)


def test_state_dicts_convert_both_ways():
    x, y = _batch()
    plain, fused = _net("darts", False), _net("darts", True)
    with torch.no_grad():
        for p in fused.parameters():
            p.add_(0.1 * torch.randn_like(p))
        fused(x)  # running statistics of its own
    plain.load_state_dict(fused.state_dict(), strict=True)
    for net in (plain, fused):
        net.eval()
    _close(plain(x), fused(x), "logits, fused -> plain")
    back = _net("darts", True)
    back.load_state_dict(plain.state_dict(), strict=True)
    back.eval()
    _close(back(x), plain(x), "logits, plain -> fused")
    assert all(e._linked() for e in back.modules() if isinstance(e, FusedMixedOp))


def test_moves_copies_and_replaced_buffers_stay_exact():
    torch.manual_seed(0)
    fused = SuperNet(C=4, num_classes=3, layers=3, ops=DARTS_PRIMITIVES, nodes=2, in_channels=1, fused=True)
    fused = fused.double()  # new buffers: linked again
    edges = [m for m in fused.modules() if isinstance(m, FusedMixedOp)]
    assert all(e._linked() for e in edges)
    twin = copy.deepcopy(fused)  # the copy's views share the copy's storage
    assert all(e._linked() for e in twin.modules() if isinstance(e, FusedMixedOp))
    plain = _net("darts", False)
    plain.load_state_dict(fused.state_dict())
    plain_twin = copy.deepcopy(plain)
    x, y = _batch()
    # a buffer replaced behind the edge's back: that edge takes the plain path, still exact
    bn = edges[0].ops[DARTS_PRIMITIVES.index("sep_conv_3x3")].op[3]
    bn.running_mean = bn.running_mean.clone()
    assert not edges[0]._linked()
    for a, b in ((plain, fused), (plain_twin, twin)):
        _close(_loss_and_grads(a, x, y)[1], _loss_and_grads(b, x, y)[1], "loss")
        sa, sb = a.state_dict(), b.state_dict()
        for k in sa:
            _close(sa[k].double(), sb[k].double(), k, 1e-12, floor=1.0)
    fused.load_state_dict(fused.state_dict(), assign=True)  # assigned tensors: linked again after loading
    assert all(e._linked() for e in edges)


def test_fixed_and_one_hot_weights(layout):
    """Weights without gradient: all non-zero (evaluation) runs fused; one-hot (NASP) runs only the chosen ops."""
    plain, fused = _pair("darts")
    x, y = _batch()
    with torch.no_grad():
        _close(plain(x), fused(x), "logits under no_grad")
    mix = {}
    for kind in plain.kinds:
        w = torch.zeros(plain.alpha_shape(kind), dtype=torch.float64)
        w[torch.arange(w.shape[0]), torch.randint(1, w.shape[1], (w.shape[0],))] = 1.0
        mix[kind] = w
    outs = []
    for net in (plain, fused):
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x, mix), y).backward()
        outs.append({n: p.grad for n, p in net.named_parameters()})
    for n in outs[0]:
        assert (outs[0][n] is None) == (outs[1][n] is None), n
        if outs[0][n] is not None:
            _close(outs[0][n], outs[1][n], n)
    assert any(g is None for g in outs[0].values())  # ops weighted zero were not run


def test_skip_dropout_and_perturbed_weights(layout):
    plain, fused = _pair("darts")
    for net in (plain, fused):
        net.set_skip_dropout(0.3)
    x, y = _batch()
    g = torch.Generator().manual_seed(5)
    mix = {k: torch.rand(plain.alpha_shape(k), generator=g, dtype=torch.float64).requires_grad_()
           for k in plain.kinds}  # any tensor, e.g. an SDARTS perturbation
    losses, grads = [], []
    for net in (plain, fused):
        torch.manual_seed(11)  # the same dropout masks
        loss = F.cross_entropy(net(x, mix), y)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, list(mix.values())))
    _close(losses[0], losses[1], "loss")
    for a, b in zip(*grads):
        _close(a, b, "mix gradient")


def test_edge_op_subsets_and_double_backward(layout):
    """P-DARTS' per-edge op subsets, and a double backward (Amended-DARTS' exact products)."""
    rows = [[1, 3, 4, 6], [4, 5, 6, 7], [0, 3, 5, 7], [2, 3, 4, 7], [1, 2, 3, 6]]
    edge_ops = {k: rows for k in ("normal", "reduce")}
    nets = []
    for fused in (False, True):
        torch.manual_seed(0)
        nets.append(SuperNet(C=4, num_classes=3, layers=3, ops=DARTS_PRIMITIVES, nodes=2, in_channels=1,
                             edge_ops=edge_ops, fused=fused).double())
    nets[1].load_state_dict(nets[0].state_dict())
    x, y = _batch()
    out = []
    for net in nets:
        weights = net.weight_parameters()
        g = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True)
        v = [torch.ones_like(t) for t in g]
        out.append(torch.autograd.grad(g, net.arch_parameters(), grad_outputs=v, allow_unused=True))
    for a, b in zip(*out):
        _close(a, b, "mixed second derivative")


@pytest.mark.parametrize("stride,size", [(1, 8), (1, 7), (2, 8)])
@pytest.mark.parametrize("K", [1, 2])
def test_one_edge(stride, size, K, layout):
    """One edge alone, odd sizes included (stride 1: the dilated convs' fallback without parity phases)."""
    torch.manual_seed(0)
    plain = MixedOp(8, stride, DARTS_PRIMITIVES, K).double()
    fused = FusedMixedOp(8, stride, DARTS_PRIMITIVES, K).double()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(3, 8, size, size, dtype=torch.float64, requires_grad=True)
    a = torch.randn(len(DARTS_PRIMITIVES), dtype=torch.float64, requires_grad=True)
    probe = None
    for net in (plain, fused):
        out = net(x, torch.softmax(a, 0))
        probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
        grads = torch.autograd.grad((out * probe).sum(), [x, a, *net.parameters()])
        if net is plain:
            ref = (out, grads)
        else:
            _close(ref[0], out, "output")
            for g0, g1 in zip(ref[1], grads):
                _close(g0, g1, "gradient")


def test_unknown_ops_run_plain():
    """NAS-Bench-201's ops: only the pooling BN is fused, the convs run as in the plain edge."""
    ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    torch.manual_seed(0)
    plain = MixedOp(4, 1, ops).double()
    fused = FusedMixedOp(4, 1, ops).double()
    fused.load_state_dict(plain.state_dict())
    assert fused._final == [4] and fused._plain_ops == [1, 2, 3]
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    w = torch.softmax(torch.randn(5, dtype=torch.float64), 0)
    _close(plain(x, w), fused(x, w), "output")


def _search(tmp_path: Path, name: str, *extra: str) -> tuple[dict, dict]:
    overrides = [o for o in TINY_SEARCH if not o.startswith("space.ops=")]
    overrides += [f"space.ops=[{','.join(DARTS_PRIMITIVES)}]", "dataset.subset=0.25", "seed=3", *extra]
    result = run_search(to_typed(compose("search", overrides)), tmp_path / name)
    alphas = np.load(tmp_path / name / "alphas.npz")
    return result, {k: alphas[k] for k in alphas.files if alphas[k].dtype.kind == "f"}


@pytest.fixture
def float64_search(monkeypatch):
    """Searches in float64: the supernet is built in float64 and casts the (float32) images.

    In float32 the two paths differ by summation order only (the next test), but a search amplifies that:
    two plain float32 searches, one of them with oneDNN's convolutions switched off, end ~1e-4 apart in the
    alphas and with different genotypes. In float64 the plain and the fused search agree to ~1e-16.
    """
    forward = SuperNet.forward
    monkeypatch.setattr(SuperNet, "forward",
                        lambda self, x, mix=None: forward(self, x.to(self.stem[0].weight.dtype), mix))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("method", ["darts", "amended"])
def test_search_fused_equals_plain(tmp_path: Path, method: str, float64_search):
    plain, a = _search(tmp_path, "plain", f"method={method}", "supernet.fused=false")
    fused, b = _search(tmp_path, "fused", f"method={method}", "supernet.fused=true")
    assert plain["genotype"] == fused["genotype"]
    assert a.keys() == b.keys() and {"normal", "reduce"} <= a.keys()
    for k in a:
        assert a[k].dtype == np.float64
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-8, err_msg=k)


def test_float32_step_agrees_to_rounding():
    """Float32 (oneDNN, channels-last on the CPU): the gradients of one step agree to float32 rounding."""
    nets = []
    for fused in (False, True):
        torch.manual_seed(0)
        nets.append(SuperNet(C=8, num_classes=10, layers=3, ops=DARTS_PRIMITIVES, nodes=2, in_channels=1, fused=fused))
    nets[1].load_state_dict(nets[0].state_dict())
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    grads = [torch.autograd.grad(F.cross_entropy(n(x), y), list(n.parameters())) for n in nets]
    for a, b in zip(*grads):
        _close(a, b, "float32 gradient", 1e-4)


METHODS = {
    "pcdarts": ["method=pcdarts", "supernet.C=4", "supernet.partial_channels=2", "search.batch_size=32",
                "search.arch_warmup_epochs=0"],
    "pdarts": ["method=pdarts", "search.epochs=1", "search.arch_warmup_epochs=0", "search.batch_size=32"],
    "nasp": ["method=nasp", "search.epochs=1"],
    "sdarts_rs": ["method=sdarts_rs", "search.epochs=1"],
    "sdarts_adv": ["method=sdarts_adv", "search.epochs=1"],
}


@pytest.mark.parametrize("method", list(METHODS))
def test_method_searches_fused_equal_plain(tmp_path: Path, method: str, float64_search):
    """PC-DARTS (partial channels, edge weights), P-DARTS (stages, per-edge ops, skip dropout), NASP (one-hot
    weight steps) and SDARTS (perturbed weights) search alike with fused edges (float64, see above)."""
    plain, a = _search(tmp_path, "plain", *METHODS[method], "supernet.fused=false")
    fused, b = _search(tmp_path, "fused", *METHODS[method], "supernet.fused=true")
    assert plain["genotype"] == fused["genotype"]
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-8, err_msg=k)
