"""The stable family's alpha maps against their authors' code and against exact math.

Each reference below is the released computation written out here (repository and file in the
comment), fed the same alphas and the same random draws as the map. Gradients are checked on tiny
float64 problems: the Gumbel maps with the noise fixed, the Dirichlet map in expectation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_OPS, TINY_SYNTH
from nasrun.config.compose import compose, to_typed
from nasrun.methods import make_alpha_map
from nasrun.methods.sampling_maps import gumbel_noise
from nasrun.search.loop import run_search
from nasrun.supernet import SuperNet
from nasrun.supernet.mixed_op import MixedOp


def _map(name: str, *overrides: str):
    return make_alpha_map(to_typed(compose("search", [f"alpha_map={name}", *overrides])).alpha_map)


def _net(alpha_map=None, seed: int = 0) -> SuperNet:
    torch.manual_seed(seed)
    net = SuperNet(C=2, num_classes=3, layers=3, ops=TINY_OPS, nodes=2, in_channels=1, fused=False,
                   alpha_map=alpha_map).double()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.randn_like(a))
    return net


def _state(seed: int) -> torch.Tensor:
    return torch.Generator().manual_seed(seed * 1000 + 3).get_state()


# ------------------------------------------------------------------ DrNAS
def test_dirichlet_draws_the_released_sample_row_by_row():
    """xiangning-chen/DrNAS utils.py: per edge row, Dirichlet(ELU(alpha) + 1).rsample(), normal then reduce."""
    m = _map("dirichlet")
    m.seed(4)
    net = _net(m)
    mine = net.mixing_weights()
    torch.set_rng_state(_state(4))
    for kind in ("normal", "reduce"):
        conc = F.elu(net.alphas(kind).detach()) + 1
        rows = [torch.distributions.Dirichlet(conc[i]).rsample() for i in range(conc.shape[0])]
        assert torch.equal(mine[kind].detach(), torch.stack(rows))
    assert torch.equal(net.summary_weights()["normal"], F.softmax(net.alphas("normal"), -1))  # the parse reads softmax


def test_dirichlet_pathwise_gradient_matches_the_gradient_of_the_mean():
    """E[theta] = c / sum(c), c = ELU(alpha) + 1: the mean of many pathwise gradients is its exact gradient."""
    m = _map("dirichlet")
    m.seed(0)
    alpha = torch.tensor([[0.3, -0.7, 1.2]], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    n = 20000
    draws = m.draw(alpha.expand(n, 3), m.generator)
    (draws @ c).sum().backward()
    pathwise = alpha.grad[0] / n
    exact = alpha.detach().clone().requires_grad_()
    conc = F.elu(exact) + 1
    ((conc / conc.sum()) @ c).backward()
    assert torch.allclose(pathwise, exact.grad, atol=0.02)
    assert not torch.allclose(pathwise, torch.zeros(3, dtype=torch.float64), atol=0.05)


def test_dirichlet_kl_is_drnas_term():
    """DrNAS model_search.py _loss (reg_type=kl): reg_scale * sum_e KL(Dir(ELU(alpha_e)+1) || Dir(1))."""
    m = _map("dirichlet", "alpha_map.kl=0.001")
    net = _net(m)
    reg = m.regulariser(net, {})
    expected = 0.0
    for kind in ("normal", "reduce"):
        conc = F.elu(net.alphas(kind).detach()) + 1
        for row in conc:  # KL(Dir(a) || Dir(1)) = lgamma(sum a) - sum lgamma(a) - lgamma(K) + sum (a-1)(psi(a)-psi(sum a))
            k = len(row)
            expected += float(torch.lgamma(row.sum()) - torch.lgamma(row).sum() - torch.lgamma(torch.tensor(float(k), dtype=torch.float64))
                              + ((row - 1) * (torch.digamma(row) - torch.digamma(row.sum()))).sum())
    assert float(reg.detach()) == pytest.approx(0.001 * expected, rel=1e-10)
    assert _map("dirichlet").regulariser(net, {}) is None


# ------------------------------------------------------------------ SNAS and GDAS
def test_gumbel_is_torch_gumbel_softmax_with_the_same_draws_and_its_temperature_schedule():
    """automl/ConfigurableOptimizer snas/sampler.py: F.gumbel_softmax(alpha, tau), hard=False, on raw alphas;
    tau = (1 - e/E)(tau0 - tau_min) + tau_min, e = 0 .. E-1."""
    m = _map("gumbel")
    m.seed(1)
    m.begin_epoch(3, 10)
    tau = (1 - 3 / 10) * (1.0 - 0.03) + 0.03
    assert m.temperature() == pytest.approx(tau, rel=1e-15)
    net = _net(m)
    mine = net.mixing_weights()
    torch.set_rng_state(_state(1))
    for kind in ("normal", "reduce"):
        ref = F.gumbel_softmax(net.alphas(kind).detach(), tau=tau, hard=False)
        assert torch.allclose(mine[kind].detach(), ref, rtol=0, atol=1e-15)
    m.begin_epoch(9, 10)
    assert m.temperature() == pytest.approx(0.03 + 0.97 / 10)


def test_gumbel_gradient_with_fixed_noise_is_exact():
    m = _map("gumbel")
    m.begin_epoch(2, 5)
    g = gumbel_noise(torch.zeros(3, 4, dtype=torch.float64), torch.Generator().manual_seed(0))
    tau = m.temperature()
    torch.autograd.gradcheck(lambda a: F.softmax((a + g) / tau, -1), torch.randn(3, 4, dtype=torch.float64,
                                                                                   requires_grad=True))
    alpha = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 4, dtype=torch.float64)
    y = F.softmax((alpha + g) / tau, -1)
    (y * v).sum().backward()
    exact = y.detach() * (v - (y.detach() * v).sum(-1, keepdim=True)) / tau  # softmax Jacobian, by hand
    assert torch.allclose(alpha.grad, exact, atol=1e-14)


def _gdas_reference(alpha: torch.Tensor, tau: float) -> torch.Tensor:
    """xautodl search_model_gdas.py: gumbels = -log(Exp(1)); probs = softmax((log_softmax(a) + gumbels) / tau);
    index = argmax; hardwts = one_hot(index) - probs.detach() + probs."""
    gumbels = -torch.empty_like(alpha).exponential_().log()
    probs = F.softmax((F.log_softmax(alpha, dim=1) + gumbels) / tau, dim=1)
    index = probs.max(-1, keepdim=True)[1]
    one_h = torch.zeros_like(probs).scatter_(-1, index, 1.0)
    return one_h - probs.detach() + probs


def test_gumbel_hard_is_gdas_with_the_same_draws_and_its_temperature_schedule():
    """xautodl GDAS.py: tau = tau_max - (tau_max - tau_min) * epoch / (epochs - 1): 10 first, exactly 0.1 last."""
    m = _map("gumbel_hard")
    m.seed(2)
    m.begin_epoch(0, 250)
    assert m.temperature() == 10.0
    m.begin_epoch(249, 250)
    assert m.temperature() == pytest.approx(0.1, abs=1e-15)
    m.begin_epoch(100, 250)
    net = _net(m)
    mine = net.mixing_weights()
    torch.set_rng_state(_state(2))
    for kind in ("normal", "reduce"):
        ref = _gdas_reference(net.alphas(kind).detach(), 10 - 9.9 * 100 / 249)
        assert torch.equal(mine[kind].detach(), ref)
        assert ((mine[kind] != 0).sum(-1) == 1).all()  # one op per edge in the forward


@pytest.mark.parametrize("mode", ["scalars", "product"])
def test_gdas_edge_runs_only_the_chosen_op_and_has_the_released_gradient(mode):
    """The NB201 cell: sum_k (h_k * op_k(x) if k == i else h_k); the NASNet MixedOp: op_i(x) * h_i."""
    torch.manual_seed(0)
    edge = MixedOp(2, 1, TINY_OPS).double()
    edge.single_op = mode
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    alpha = torch.randn(4, dtype=torch.float64, requires_grad=True)
    p = F.softmax(alpha / 0.7, -1)
    i = int(p.argmax())
    if TINY_OPS[i] == "none":  # make the chosen op one that runs
        alpha = alpha.detach().clone()
        alpha[2] = alpha.max() + 3
        alpha.requires_grad_()
        p = F.softmax(alpha / 0.7, -1)
        i = 2
    h = torch.zeros(4, dtype=torch.float64).scatter(0, torch.tensor([i]), 1.0) - p.detach() + p
    calls = []
    hooks = [op.register_forward_hook(lambda *a, k=k: calls.append(k)) for k, op in enumerate(edge.ops)]
    out = edge(x, h)
    for hook in hooks:
        hook.remove()
    assert calls == [i]
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    mine = alpha.grad.clone()
    alpha.grad = None
    p = F.softmax(alpha / 0.7, -1)
    h = torch.zeros(4, dtype=torch.float64).scatter(0, torch.tensor([i]), 1.0) - p.detach() + p
    ref = h[i] * edge.ops[i](x)
    if mode == "scalars":
        ref = ref + sum(h[k] for k in range(4) if k != i)
    (ref * upstream).sum().backward()
    assert torch.allclose(out, ref.detach(), atol=0, rtol=0) and torch.allclose(mine, alpha.grad, atol=1e-14)


# ------------------------------------------------------------------ FairDARTS and beta-DARTS
@pytest.mark.parametrize("form", ["mse", "l1"])
def test_sigmoid_gates_and_the_zero_one_loss(form):
    """xiaomi-automl/FairDARTS separate_loss.py: -w_aux * mean((sigmoid(cat[a_normal; a_reduce]) - 0.5)^2)
    (l1: mean |.|), w_aux = 10; model_search.py: weights = sigmoid(alpha)."""
    m = _map("sigmoid", f"alpha_map.zero_one_form={form}")
    net = _net(m)
    assert torch.equal(net.mixing_weights()["normal"], torch.sigmoid(net.alphas("normal")))
    reg = m.regulariser(net, {})
    gates = torch.sigmoid(torch.cat([net.alphas("normal"), net.alphas("reduce")]).detach())
    expected = -10 * ((gates - 0.5) ** 2).mean() if form == "mse" else -10 * (gates - 0.5).abs().mean()
    assert float(reg.detach()) == pytest.approx(float(expected), rel=1e-14)
    reg.backward()
    a = net.alphas("normal").detach()
    s = torch.sigmoid(a)
    n = gates.numel()
    exact = (-10 * 2 * (s - 0.5) * s * (1 - s) / n) if form == "mse" else (-10 * torch.sign(s - 0.5) * s * (1 - s) / n)
    assert torch.allclose(net.alphas("normal").grad, exact, atol=1e-15)
    assert m.init == 0.0


def test_beta_decay_loss_and_its_weight_schedule():
    """Sunshine-Ye/Beta-DARTS architect.py: lambda * mean_e logsumexp_k alpha; train_search.py: lambda = 50 * epoch / 100."""
    m = _map("softmax", "alpha_map.beta_decay=50")
    net = _net(m)
    m.begin_epoch(0, 100)
    assert float(m.regulariser(net, {}).detach()) == 0.0
    m.begin_epoch(99, 100)
    assert m.beta_weight() == pytest.approx(49.5)
    reg = m.regulariser(net, {})
    rows = torch.cat([net.alphas("normal"), net.alphas("reduce")]).detach()
    lse = torch.log(torch.exp(rows).sum(-1))
    assert float(reg.detach()) == pytest.approx(49.5 * float(lse.mean()), rel=1e-13)
    reg.backward()
    exact = 49.5 * F.softmax(net.alphas("normal").detach(), -1) / rows.shape[0]  # d mean LSE / d alpha = softmax / E
    assert torch.allclose(net.alphas("normal").grad, exact, atol=1e-14)
    assert _map("softmax").regulariser(net, {}) is None  # DARTS unchanged


# ------------------------------------------------------------------ schedules of the draws, resume
def test_forward_draws_afresh_and_step_reuses_its_draw():
    fwd = _map("gumbel")
    fwd.seed(0)
    net = _net(fwd)
    fwd.begin_step()
    assert not torch.equal(net.mixing_weights()["normal"], net.mixing_weights()["normal"])
    step = _map("gumbel", "alpha_map.sample=step")
    step.seed(0)
    net = _net(step)
    step.begin_step()
    first = net.mixing_weights()["normal"]
    assert torch.equal(first, net.mixing_weights()["normal"])
    step.begin_step()
    assert not torch.equal(first, net.mixing_weights()["normal"])


@pytest.mark.parametrize("name", ["dirichlet", "gumbel_hard"])
def test_a_sampling_search_resumes_exactly(tmp_path, name):
    from nasrun.run.signals import Interrupted

    cfg = to_typed(compose("search", [*TINY_SYNTH, f"alpha_map={name}", "search.epochs=3", "precision=fp64"]))
    run_search(cfg, tmp_path / "whole")

    def stop(epoch, row):
        if epoch == 1:
            raise Interrupted(15)

    with pytest.raises(Interrupted):
        run_search(cfg, tmp_path / "resumed", on_epoch_end=stop)
    run_search(cfg, tmp_path / "resumed")
    for name_ in ("normal", "reduce"):
        a = np.load(tmp_path / "whole" / "alphas.npz")[name_]
        b = np.load(tmp_path / "resumed" / "alphas.npz")[name_]
        assert np.array_equal(a, b)
    rows = [json.loads(x)["val_loss"] for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(x)["val_loss"] for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert rows == again


def test_the_presets_compose_from_the_axes():
    picks = {p: to_typed(compose("search", [f"method={p}"])) for p in ("drnas", "gdas", "snas", "fairdarts", "beta_darts")}
    assert {p: c.alpha_map.name for p, c in picks.items()} == {
        "drnas": "dirichlet", "gdas": "gumbel_hard", "snas": "gumbel", "fairdarts": "sigmoid", "beta_darts": "softmax"}
    assert all(c.estimator.name == "first_order" for c in picks.values())
    assert (picks["drnas"].search.lr, picks["drnas"].search.arch_lr, picks["drnas"].search.arch_warmup_epochs) == (
        0.1, 6e-4, 10)
    assert (picks["gdas"].search.epochs, picks["gdas"].search.weight_decay, picks["gdas"].search.batch_size) == (
        250, 5e-4, 256)
    assert (picks["fairdarts"].search.batch_size, picks["fairdarts"].search.arch_lr) == (128, 3e-3)
    assert picks["beta_darts"].alpha_map.beta_decay == 50.0
    nb201 = to_typed(compose("search", ["method=snas", "space=nb201"]))
    assert (nb201.search.arch_betas, nb201.search.lr_min, nb201.search.weight_decay) == ([0.9, 0.999], 0.0, 5e-4)


# ------------------------------------------------------------------ DARTS-
def test_the_auxiliary_skip_coefficient_decays_as_released():
    """Meituan-AutoML/DARTS- src/utils.py: linear beta0 * (T_max - epoch) / (T_max - T_start), T_start = 0, T_max = 50:
    1 at epoch 0, 0.02 at epoch 49, never 0; cosine beta0 * (1 + cos(pi * epoch / T_max)) / 2."""
    from nasrun.supernet.stages import aux_skip_weight

    assert aux_skip_weight(1.0, 0, 50, "linear") == 1.0
    assert aux_skip_weight(1.0, 49, 50, "linear") == pytest.approx(0.02, abs=1e-15)
    assert aux_skip_weight(2.0, 25, 50, "cosine") == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("stride", [1, 2])
def test_a_mixed_edge_adds_the_auxiliary_skip_outside_the_softmax(stride):
    """src/search/model_search.py MixedOp: sum_k softmax(alpha)_k op_k(x) + beta * aux(x); aux = identity, or a
    FactorizedReduce(C, C, affine=False) with learnable convs on a striding edge."""
    torch.manual_seed(0)
    edge = MixedOp(4, stride, TINY_OPS)
    plain = sum(p.numel() for p in edge.parameters())
    edge.add_aux_skip()
    edge = edge.double()
    edge.aux_beta = 0.3
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = F.softmax(torch.randn(4, dtype=torch.float64), -1)
    expected = sum(w[k] * edge.ops[k](x) for k in (1, 2, 3)) + 0.3 * edge.aux(x)
    assert torch.allclose(edge(x, w), expected, rtol=0, atol=1e-14)
    learnable = sum(p.numel() for p in edge.parameters()) - plain
    assert learnable == (0 if stride == 1 else 2 * 4 * 2)  # FactorizedReduce's two 1x1 convs, C/2 outputs each
    if stride == 2:
        edge(x, w).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in edge.aux.parameters())


def test_darts_minus_keeps_the_auxiliary_skip_out_of_the_genotype_and_off_elsewhere(tmp_path):
    base = to_typed(compose("search", [*TINY_SYNTH, "seed=3", "supernet.fused=false"]))
    minus = to_typed(compose("search", [*TINY_SYNTH, "seed=3", "method=darts_minus", "supernet.fused=false"]))
    from nasrun.search.state import build_supernet

    torch.manual_seed(0)
    net = build_supernet(base, 10, 3, 3)
    assert all(m.aux is None for m in net.modules() if isinstance(m, MixedOp))
    torch.manual_seed(0)
    with_aux = build_supernet(minus, 10, 3, 3)
    assert all(m.aux is not None for m in with_aux.modules() if isinstance(m, MixedOp))
    same = dict(with_aux.named_parameters())
    assert all(torch.equal(p, same[n]) for n, p in net.named_parameters())  # the aux skip is drawn last
    result = run_search(minus, tmp_path / "minus")
    rows = [json.loads(x) for x in (tmp_path / "minus" / "metrics.jsonl").read_text().splitlines()]
    assert [r["aux_skip"] for r in rows] == [1.0, 0.5]
    assert all(len(edge) == 3 for edge in result["genotype"]["cells"]["normal"]["edges"])


STABLE = ["drnas", "gdas", "snas", "fairdarts", "beta_darts", "darts_minus"]


@pytest.mark.parametrize("space,preset", [("darts", p) for p in STABLE])  # on NB201: tests/test_spaces_methods.py
def test_each_preset_searches_then_retrains_on_digits(space, preset, tmp_path):
    from nasrun.train.retrain import run_retrain

    shape = ["space.nodes=2", "supernet.layers=3"] if space == "darts" else ["supernet.layers=1"]
    if preset == "fairdarts":  # two epochs move no gate from 0.5 to the released threshold, 0.85
        shape.append("selection.threshold=0.5")
    if preset == "drnas":  # its stages see 1/6, then 1/4 of the channels: C a multiple of 12
        shape += ["supernet.C=12", "search.epochs=1"]
    cfg = to_typed(compose("search", [f"method={preset}", f"space={space}", "dataset=digits", "dataset.subset=16",
                                      "search.epochs=2", "search.batch_size=32", "supernet.C=4", *shape,
                                      "search.arch_warmup_epochs=0", "progress=false"]))
    result = run_search(cfg, tmp_path / "search")
    assert result["status"] == "completed" and result["method"] == preset and result["space"] == space
    rows = [json.loads(x) for x in (tmp_path / "search" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["alpha_entropy_normal"]) for r in rows)
    layers = "recipe.layers=3" if space == "darts" else "recipe.layers=1"
    done = run_retrain(to_typed(compose("retrain", [f"genotype={tmp_path / 'search'}", "recipe=quick", "recipe.epochs=1",
                                                    "recipe.C=4", layers, "progress=false"])),
                       tmp_path / "retrain")
    assert done["status"] == "completed" and 0.0 <= done["test_acc"] <= 1.0


def test_a_cell_type_no_path_reaches_gets_a_zero_gradient_not_an_error():
    """GDAS in the DARTS space: when no path of the loss runs through a chosen op of the reduction cells (here:
    each of their edges picks `none`), the loss does not depend on alphas_reduce; the released zero op (x * 0)
    gives it a zero gradient, so does nasrun."""
    from nasrun.methods import ArchBatch, make_estimator

    m = _map("gumbel_hard")
    net = _net(m)

    def picking(reduce_op: int):
        def fixed(alpha, generator):  # every reduction edge picks ``reduce_op``, every normal edge sep_conv_3x3
            p = F.softmax(alpha, -1)
            pick = reduce_op if alpha is net.alphas("reduce") else 3
            hard = torch.zeros_like(p).scatter_(-1, torch.full((alpha.shape[0], 1), pick), 1.0)
            return hard - p.detach() + p
        return fixed

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g)
    estimator = make_estimator(to_typed(compose("search", [])).estimator)
    m.draw = picking(3)
    assert estimator(net, ArchBatch(x, y, x, y, None, 0.1, 0, 1)).grads[1].abs().sum() > 0
    m.draw = picking(0)
    reduce = estimator(net, ArchBatch(x, y, x, y, None, 0.1, 0, 1)).grads[1]
    assert torch.equal(reduce, torch.zeros_like(reduce))


def test_tracking_the_eigenvalue_leaves_a_sampling_search_unchanged(tmp_path):
    """The eigenvalue's products use one draw of the map and put its generator back: the search goes on as without."""
    base = [*TINY_SYNTH, "alpha_map=dirichlet", "precision=fp64"]
    run_search(to_typed(compose("search", base)), tmp_path / "plain")
    tracked = run_search(to_typed(compose("search", [*base, "search.track_eigenvalue=true", "search.eigen_iters=3",
                                                     "search.eigen_batches=1"])), tmp_path / "tracked")
    assert np.array_equal(np.load(tmp_path / "plain" / "alphas.npz")["normal"],
                          np.load(tmp_path / "tracked" / "alphas.npz")["normal"])
    assert np.isfinite(tracked["final"]["eigenvalue"])


# ------------------------------------------------------------------ the loop's order and Nesterov SGD
def test_the_virtual_step_follows_nesterov_sgd():
    """The unrolled weights w' are the step torch's SGD takes, Nesterov's included (GDAS, SNAS on NB201)."""
    from nasrun.methods.estimators import virtual_step

    torch.manual_seed(0)
    for nesterov in (False, True):
        w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
        opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=3e-4, nesterov=nesterov)
        for _ in range(2):  # a momentum buffer exists from the second step on
            saved = [w.detach().clone()]
            g = torch.randn(5, dtype=torch.float64)
            virtual_step(opt, [w], saved, [g], 0.1)
            virtual = w.detach().clone()
            with torch.no_grad():
                w.copy_(saved[0])
            w.grad = g.clone()
            opt.step()
            assert torch.allclose(virtual, w.detach(), rtol=0, atol=1e-15), nesterov


def test_weight_first_runs_the_weight_step_before_the_architecture_step(tmp_path, monkeypatch):
    """xautodl GDAS.py: the weight step on the base batch, then the architecture step on the arch batch."""
    import nasrun.search.loop as loop

    calls: list[str] = []
    arch, weight = loop._arch_step, loop._weight_step
    monkeypatch.setattr(loop, "_arch_step", lambda *a: (calls.append("arch"), arch(*a))[1])
    monkeypatch.setattr(loop, "_weight_step", lambda *a: (calls.append("weight"), weight(*a))[1])
    run_search(to_typed(compose("search", [*TINY_SYNTH, "search.epochs=1", "search.order=weight_first"])), tmp_path / "w")
    assert calls[:4] == ["weight", "arch", "weight", "arch"]
    calls.clear()
    run_search(to_typed(compose("search", [*TINY_SYNTH, "search.epochs=1"])), tmp_path / "a")
    assert calls[:4] == ["arch", "weight", "arch", "weight"]


def test_the_weight_step_clip_can_count_the_alphas_gradient_and_drops_it():
    from nasrun.train.steps import sgd_step

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    a = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    loss = (w.sum() * 2 + (a * w[:3]).sum()) ** 2
    gw, ga = torch.autograd.grad(loss, (w, a))
    before = w.detach().clone()
    opt = torch.optim.SGD([w], lr=0.1)
    sgd_step((w.sum() * 2 + (a * w[:3]).sum()) ** 2, opt, [w], 1e-3, 0.1, clip_also=[a])
    joint = torch.cat([gw, ga]).norm()
    expected = before - 0.1 * gw * (1e-3 / (joint + 1e-6))  # torch's clip_grad_norm_ coefficient on the joint norm
    assert torch.allclose(w.detach(), expected, rtol=0, atol=1e-15) and a.grad is None


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_gdas_joint_clip_changes_only_the_clip(space, tmp_path):
    shape = [] if space == "darts" else ["space=nb201", "supernet.layers=1"]
    base = [o for o in TINY_SYNTH if space == "darts" or not o.startswith(("space.", "supernet.layers"))]
    runs = {}
    for joint in ("true", "false"):
        for clip in ("1e9", "1e-3"):
            cfg = to_typed(compose("search", [*base, *shape, "method=gdas", "search.epochs=2", "precision=fp64",
                                              "search.batch_size=16", f"search.clip_with_alphas={joint}",
                                              f"search.grad_clip={clip}"]))
            run_search(cfg, tmp_path / f"{joint}_{clip}")
            with np.load(tmp_path / f"{joint}_{clip}" / "alphas.npz") as data:
                runs[joint, clip] = data["normal"].copy()
    assert np.array_equal(runs["true", "1e9"], runs["false", "1e9"])  # the same draws, the same forward
    assert not np.array_equal(runs["true", "1e-3"], runs["false", "1e-3"])  # a larger norm: a smaller step
    assert to_typed(compose("search", ["method=gdas"])).search.clip_with_alphas
    with pytest.raises(Exception, match="search.clip_with_alphas"):
        to_typed(compose("search", ["method=gdas", "perturbation=random"]))
