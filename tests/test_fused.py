"""The fused supernet (supernet.fused): the plain supernet's state dict, the plain supernet's results.

Its cells run the edges leaving each state as one fused edge group (stacked parameters; the per-edge
fused op where a cell cannot be batched or the alpha map trains single paths). Float64 tiny
supernets, plain and fused from one state dict: logits, loss, every weight, alpha and beta gradient
and the BN running statistics agree to 1e-10 (relative), in train and eval mode, with and without
partial channels and edge normalisation, on every shipped space with fusable ops (DARTS, S5,
R-DARTS S1, NASP's, the large space, NB201's skeleton), with the CPU layouts (channels-last, dilated
convs as dilation-1 convs on parity phases) and without (the path other devices take). Then short
searches, plain and fused, end at the same genotype and alphas.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nasrun.supernet.fused as fused_module
from conftest import TINY_SEARCH, TINY_SYNTH
from nasrun.config.schema import DARTS_PRIMITIVES
from nasrun.config.compose import compose, to_typed
from nasrun.search.loop import run_search
from nasrun.spaces.space import Space
from nasrun.supernet import MixedOp, SuperNet
from nasrun.supernet.batched import EdgeGroup, plain_named
from nasrun.supernet.fused import FusedMixedOp

TOL = 1e-10


def _space(name: str) -> Space | None:
    if name == "darts":
        return None
    return Space(to_typed(compose("search", [f"space={name}"])).space)


def _net(space: str, fused: bool, K: int = 1, edge_norm: bool = False) -> SuperNet:
    torch.manual_seed(0)
    kw = dict(ops=DARTS_PRIMITIVES, nodes=2) if space == "darts" else dict(space=_space(space))
    layers = 1 if space == "nb201" else 3
    net = SuperNet(C=4, num_classes=3, layers=layers, in_channels=1, partial_channels=K, edge_norm=edge_norm,
                   fused=fused, **kw).double()
    with torch.no_grad():  # alphas away from uniform, so every term of the alpha gradient shows
        for a in net.arch_parameters():
            a.copy_(torch.randn_like(a))
    return net


def _pair(space: str, K: int = 1, edge_norm: bool = False) -> tuple[SuperNet, SuperNet]:
    plain, fused = _net(space, False, K, edge_norm), _net(space, True, K, edge_norm)
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


def _grads(net: SuperNet, loss: torch.Tensor) -> dict:
    """Every parameter's gradient, named and laid out as in the plain supernet."""
    names = [n for n, _ in net.named_parameters()]
    grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    return plain_named(net, dict(zip(names, grads)))


def _loss_and_grads(net: SuperNet, x, y):
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    return logits, loss, _grads(net, loss)


@pytest.fixture(params=["cpu", "generic"])
def layout(request, monkeypatch):
    """Both fused code paths: the CPU layouts, and the generic one (what a GPU runs), forced on the CPU."""
    if request.param == "generic":
        monkeypatch.setattr(fused_module, "_cpu_layout", lambda x: False)
    return request.param


def test_edge_groups_keep_the_plain_state_dict():
    """Every state's edges form one group (per op list); the stacked parameters are fewer, but the state dict has
    the plain keys, order, shapes and dtypes, and ``plain_named`` maps the parameters onto the plain ones."""
    plain, fused = _pair("darts")
    assert all(c._batched for c in fused.cells) and not any(c._batched for c in plain.cells)
    assert [[len(g.rows) for g in c.groups] for c in fused.cells] == [[2, 2, 1]] * 3  # 2 nodes: 5 edges
    assert not any(isinstance(m, FusedMixedOp) for m in fused.modules())
    assert len(list(fused.parameters())) < len(list(plain.parameters()))
    named = plain_named(fused, dict(fused.named_parameters()))
    assert sorted(named) == sorted(n for n, _ in plain.named_parameters())
    sp, sf = plain.state_dict(), fused.state_dict()
    assert list(sp) == list(sf)
    assert all(sp[k].shape == sf[k].shape and sp[k].dtype == sf[k].dtype for k in sp)
    four = SuperNet(C=4, num_classes=3, layers=3, in_channels=1, ops=DARTS_PRIMITIVES, fused=True)
    assert [len(g.rows) for g in four.cells[0].groups] == [4, 4, 3, 2, 1]  # 14 edges, 5 groups


def test_noise_and_single_path_keep_per_edge_fused_ops():
    """A cell with `noise` (draws in edge order) and a supernet under NASP's argmax map (single-path weight
    steps: an op that did not run keeps no gradient) keep one fused op, with its own parameters, per edge."""
    from nasrun.methods.alpha_maps import Argmax

    noisy = _net("rdarts_s4", True)
    assert not any(isinstance(m, EdgeGroup) for m in noisy.modules())
    assert any(isinstance(m, FusedMixedOp) for m in noisy.modules())
    torch.manual_seed(0)
    nasp = SuperNet(C=4, num_classes=3, layers=3, in_channels=1, ops=DARTS_PRIMITIVES, nodes=2, fused=True,
                    alpha_map=Argmax())
    assert not any(isinstance(m, EdgeGroup) for m in nasp.modules())
    assert sum(isinstance(m, FusedMixedOp) for m in nasp.modules()) == 15


@pytest.mark.parametrize("space", ["darts", "s5", "rdarts_s1", "nasp", "large", "nb201"])
@pytest.mark.parametrize("K,edge_norm", [(1, False), (2, False), (2, True)], ids=["K1", "K2", "K2-betas"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_fused_equals_plain(space, K, edge_norm, train, layout):
    plain, fused = _pair(space, K, edge_norm)
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
    arch_names = [n for n, _ in plain.named_parameters() if n.startswith(("alphas_", "betas_"))]
    assert len(arch_names) == len(plain.arch_parameters())
    assert all(gp[n] is not None and gp[n].abs().max() > 0 for n in arch_names)
    bp, bf = dict(plain.named_buffers()), dict(fused.named_buffers())
    assert bp.keys() == bf.keys()
    for name in bp:
        if bp[name].is_floating_point():
            # running means of zero-mean inputs are zero up to rounding: an absolute 1e-12 there
            _close(bp[name], bf[name], f"buffer {name}", 1e-12, floor=1.0)
        else:
            assert torch.equal(bp[name], bf[name]), name


def test_fused_path_runs_and_running_statistics_follow(monkeypatch):
    """The batched forward really runs (the BN buffers are views into one tensor per group and BN stage), and it
    moves the per-op buffers exactly as the plain forward moves them, num_batches_tracked included."""
    plain, fused = _pair("darts")
    groups = [m for m in fused.modules() if isinstance(m, EdgeGroup)]
    assert len(groups) == 9 and all(g.linked() for g in groups)
    x, _ = _batch()
    for _ in range(2):
        plain(x)
    calls = []
    monkeypatch.setattr(MixedOp, "forward", lambda *a: calls.append(a))  # the plain path would record calls
    for _ in range(2):
        fused(x)
    sp, sf = plain.state_dict(), fused.state_dict()
    moved = [k for k in sp if k.endswith("running_mean") and not torch.equal(sp[k], torch.zeros_like(sp[k]))]
    assert len(moved) > 20
    for k in sp:
        if k.endswith("num_batches_tracked"):
            assert int(sp[k]) == int(sf[k]) == 2, k
        else:
            _close(sp[k], sf[k], k, 1e-12, floor=1.0)
    assert not calls


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
    assert all(g.linked() for g in back.modules() if isinstance(g, EdgeGroup))
    buffer = io.BytesIO()  # through a checkpoint file, into another fused net
    torch.save(fused.state_dict(), buffer)
    buffer.seek(0)
    again = _net("darts", True)
    again.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    again.eval()
    _close(again(x), fused(x), "logits, fused -> fused")


def test_moves_copies_and_replaced_buffers_stay_exact():
    torch.manual_seed(0)
    fused = SuperNet(C=4, num_classes=3, layers=3, ops=DARTS_PRIMITIVES, nodes=2, in_channels=1, fused=True)
    fused = fused.double()  # new buffers and parameters: linked again, views made anew
    groups = [m for m in fused.modules() if isinstance(m, EdgeGroup)]
    assert all(g.linked() for g in groups)
    twin = copy.deepcopy(fused)  # the copy's views share the copy's storage
    assert all(g.linked() for g in twin.modules() if isinstance(g, EdgeGroup))
    plain = _net("darts", False)
    plain.load_state_dict(fused.state_dict())
    plain_twin = copy.deepcopy(plain)
    x, y = _batch()
    # a buffer replaced behind the cell's back: that cell takes the plain path (with views), still exact
    bn = fused.cells[0].edges[0].ops[DARTS_PRIMITIVES.index("sep_conv_3x3")].op[3]
    bn.running_mean = bn.running_mean.clone()
    assert not fused.cells[0].groups[0].linked()
    for a, b in ((plain, fused), (plain_twin, twin)):
        la, ga = _loss_and_grads(a, x, y)[1:]
        lb, gb = _loss_and_grads(b, x, y)[1:]
        _close(la, lb, "loss")
        for k in ga:
            _close(ga[k], gb[k], f"gradient of {k}")
        sa, sb = a.state_dict(), b.state_dict()
        for k in sa:
            _close(sa[k].double(), sb[k].double(), k, 1e-12, floor=1.0)
    fused.load_state_dict(fused.state_dict(), assign=True)  # assigned tensors: linked again after loading
    assert all(g.linked() for g in groups)
    _close(_loss_and_grads(plain, x, y)[1], _loss_and_grads(fused, x, y)[1], "loss after assign")


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
        with pytest.warns(RuntimeWarning, match="single paths") if net is fused else contextlib.nullcontext():
            F.cross_entropy(net(x, mix), y).backward()
        outs.append(plain_named(net, {n: p.grad for n, p in net.named_parameters()}))
    for n in outs[0]:
        a, b = outs[0][n], outs[1][n]
        if a is None or b is None:  # a stacked parameter has zeros where its op did not run
            assert a is None and (b is None or not b.any()), n
            continue
        _close(a, b, n)
    assert any(g is None for g in outs[0].values())  # ops weighted zero were not run
    sp, sf = plain.state_dict(), fused.state_dict()
    for k in sp:  # only the ops that ran moved their statistics
        _close(sp[k].double(), sf[k].double(), k, 1e-12, floor=1.0)


@pytest.mark.parametrize("K", [1, 2])
def test_skip_dropout_and_perturbed_weights(K, layout):
    """P-DARTS' skip dropout (the batched cell draws its masks up front, in the plain cell's order) and mixing
    weights passed in (SDARTS' perturbations)."""
    plain, fused = _pair("darts", K)
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


@pytest.mark.parametrize("K", [1, 2])
def test_edge_op_subsets_and_double_backward(K, layout):
    """P-DARTS' per-edge op subsets (edges of one state with the same list share a group, the others form
    their own), the gradients, and a double backward (Amended-DARTS' exact products)."""
    rows = {"normal": [[1, 3, 4, 6], [4, 5, 6, 7], [1, 3, 4, 6], [2, 3, 4, 7], [1, 2, 3, 6]],
            "reduce": [[0, 3, 5, 7], [0, 3, 5, 7], [0, 3, 5, 7], [2, 3, 4, 7], [1, 2, 3, 6]]}
    nets = []
    for fused in (False, True):
        torch.manual_seed(0)
        nets.append(SuperNet(C=4, num_classes=3, layers=3, ops=DARTS_PRIMITIVES, nodes=2, in_channels=1,
                             edge_ops=rows, partial_channels=K, fused=fused).double())
    nets[1].load_state_dict(nets[0].state_dict())
    assert [len(g.rows) for g in nets[1].cells[0].groups] == [2, 1, 1, 1]
    assert [len(g.rows) for g in nets[1].cells[1].groups] == [2, 1, 1, 1]
    x, y = _batch()
    first = [_loss_and_grads(net, x, y)[2] for net in nets]
    for n in first[0]:
        if first[0][n] is not None:
            _close(first[0][n], first[1][n], f"gradient of {n}")
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
    grads = [_grads(n, F.cross_entropy(n(x), y)) for n in nets]
    for k in grads[0]:
        _close(grads[0][k], grads[1][k], f"float32 gradient of {k}", 1e-4)


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


class _Stop(Exception):
    pass


def test_interrupted_fused_search_resumes_to_the_same_result(tmp_path: Path):
    """A checkpoint of a fused search (the plain layout's model state, the stacked parameters' optimiser
    state) resumes to the uninterrupted search's alphas and losses."""
    overrides = [o for o in TINY_SYNTH if not o.startswith("space.ops=")]
    cfg = to_typed(compose("search", [*overrides, f"space.ops=[{','.join(DARTS_PRIMITIVES)}]", "search.epochs=2",
                                      "seed=5", "supernet.fused=true"]))
    straight = run_search(cfg, tmp_path / "straight")

    def stop_after_first(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise _Stop

    with pytest.raises(_Stop):
        run_search(cfg, tmp_path / "resumed", on_epoch_end=stop_after_first)
    resumed = run_search(cfg, tmp_path / "resumed")
    assert resumed["status"] == "completed" and resumed["genotype"] == straight["genotype"]
    a, b = np.load(tmp_path / "straight" / "alphas.npz"), np.load(tmp_path / "resumed" / "alphas.npz")
    for kind in ("normal", "reduce"):
        np.testing.assert_array_equal(a[kind], b[kind])
    losses = [[json.loads(x)["val_loss"] for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("straight", "resumed")]
    assert losses[0] == losses[1]
