"""NASP: the projection, the box, single-path weight steps, the gradient at the discrete point, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from conftest import TINY_OPS, TINY_RETRAIN, TINY_SEARCH
from nasrun.config.compose import compose, to_typed
from nasrun.methods import ArchBatch, make_estimator, make_perturbation
from nasrun.methods.alpha_maps import Argmax
from nasrun.methods.nasp import op_param_fractions
from nasrun.config.options import ArgmaxConf, DiscreteConf, ProximalConf
from nasrun.train.retrain import run_retrain
from nasrun.search.loop import run_search
from nasrun.spaces.space import derive
from nasrun.supernet import MixedOp
from nasrun.supernet.projection import discrete_architecture, project

# NASP's three axes: the proximal estimator, the discrete weight step, the argmax alpha map (alphas start at 0.5)
NASP = ProximalConf()
NASP_WEIGHT_STEP = DiscreteConf()
NASP_MAP = ArgmaxConf(init=0.5)


def _nasp_net(net):
    net.alpha_map = Argmax(NASP_MAP)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.uniform_(0, 1)
    return net


def test_projection_is_one_op_per_edge_at_the_argmax(tiny_net):
    mix = discrete_architecture(_nasp_net(tiny_net))
    none = TINY_OPS.index("none")
    for kind in ("normal", "reduce"):
        alpha = getattr(tiny_net, f"alphas_{kind}").detach()
        onehot = mix[kind]
        assert set(onehot.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(onehot.sum(1), torch.ones(alpha.shape[0], dtype=alpha.dtype))
        masked = alpha.clone()
        masked[:, none] = -float("inf")  # `none` is never selected: the genotype cannot use it
        assert torch.equal(onehot.argmax(1), masked.argmax(1))
    # an edge whose largest alpha is `none` takes its best other op; ties go to the lower index
    alpha = torch.tensor([[0.9, 0.2, 0.7, 0.7], [0.5, 0.5, 0.5, 0.5]])
    exclude = torch.tensor([[True, False, False, False]] * 2)
    assert project(alpha, exclude).argmax(1).tolist() == [2, 1]


def test_box_constraint_holds_after_every_arch_step(tiny_net, tiny_batches):
    net = _nasp_net(tiny_net)
    est = make_estimator(NASP)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.4)  # large steps, so the box is hit
    xt, yt, xv, yv = tiny_batches
    hit = False
    for step in range(6):
        arch = est(net, ArchBatch(xt, yt, xv, yv, None, 0.1, step=step))
        a_opt.zero_grad()
        for p, g in zip(net.arch_parameters(), arch.grads):
            p.grad = g
        a_opt.step()
        hit |= any(bool(((a < 0) | (a > 1)).any()) for a in net.arch_parameters())
        est.after_step(net)
        for a in net.arch_parameters():
            assert float(a.detach().min()) >= 0.0 and float(a.detach().max()) <= 1.0
    assert hit, "the test should push some alpha out of the box"


def test_arch_gradient_is_taken_at_the_discrete_point_with_every_op_run(tiny_net, tiny_batches):
    net = _nasp_net(tiny_net)
    _, _, xv, yv = tiny_batches
    arch = make_estimator(NASP)(net, ArchBatch(*tiny_batches, None, 0.1))
    leaves = {k: v.clone().requires_grad_() for k, v in discrete_architecture(net).items()}
    loss = F.cross_entropy(net(xv, leaves), yv)
    expected = torch.autograd.grad(loss, [leaves["normal"], leaves["reduce"]])
    for got, want in zip(arch.grads, expected):
        torch.testing.assert_close(got, want)
    # unselected ops ran too: their entries have gradients (only `none` has none)
    off = (discrete_architecture(net)["normal"] == 0)
    off[:, TINY_OPS.index("none")] = False
    assert bool((arch.grads[0][off] != 0).all())
    assert abs(arch.val_loss - float(loss.detach())) < 1e-12


def test_param_regulariser_adds_its_gradient_on_the_selected_normal_entries(tiny_net, tiny_batches):
    net = _nasp_net(tiny_net)
    with torch.no_grad():  # the only op with weights wins on the first edges
        net.alphas_normal[:2, TINY_OPS.index("sep_conv_3x3")] = 1.0
    batch = ArchBatch(*tiny_batches, None, 0.1)
    plain = make_estimator(NASP)(net, batch)
    net.alpha_map = Argmax(ArgmaxConf(init=0.5, param_reg=0.5))  # the regulariser lives in the alpha map
    reg = make_estimator(ProximalConf())(net, batch)
    onehot = discrete_architecture(net)["normal"]
    torch.testing.assert_close(reg.grads[0] - plain.grads[0], 2 * 0.5 * onehot * op_param_fractions(net))
    torch.testing.assert_close(reg.grads[1], plain.grads[1])
    assert reg.stats["arch_reg"] > 0 and "arch_reg" not in plain.stats


def test_weight_step_touches_only_the_selected_ops(tiny_net, tiny_batches):
    net = _nasp_net(tiny_net)
    xt, yt, _, _ = tiny_batches
    mix = make_perturbation(NASP_WEIGHT_STEP)(net, xt, yt, 0, 1)
    assert not any(m.requires_grad for m in mix.values())
    before = [p.detach().clone() for p in net.weight_parameters()]
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    for _ in range(2):  # a second step would move unselected ops through momentum or weight decay
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xt, mix), yt).backward()
        opt.step()
    changed = {id(p) for p, b in zip(net.weight_parameters(), before) if not torch.equal(p, b)}
    selected_seen = 0
    for cell in net.cells:
        weights = mix["reduce" if cell.reduction else "normal"]
        for e, edge in enumerate(cell.edges):
            assert isinstance(edge, MixedOp)
            chosen = int(weights[e].argmax())
            for k, op in enumerate(edge.ops):
                for p in op.parameters():
                    if k == chosen:
                        selected_seen += 1
                        assert p.grad is not None and id(p) in changed
                    else:
                        assert p.grad is None and id(p) not in changed
    assert selected_seen > 0


def test_evaluation_and_genotype_follow_the_argmax_map(tiny_net, tiny_batches):
    net = _nasp_net(tiny_net)
    xt = tiny_batches[0]
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(xt), net(xt, discrete_architecture(net)))
    g = net.genotype()
    want = derive(net.alphas_normal, net.alphas_reduce, net.ops, nodes=net.nodes)
    assert g.normal == want.normal and g.reduce == want.reduce


def test_nasp_preset_searches_and_retrains_on_digits(tmp_path: Path):
    cfg = to_typed(compose("search", [*TINY_SEARCH, "method=nasp", "search.epochs=1", "seed=1"]))
    assert (cfg.estimator.name, cfg.perturbation.name, cfg.alpha_map.name) == ("proximal", "discrete", "argmax")
    result = run_search(cfg, tmp_path / "search")
    assert result["status"] == "completed" and result["method"] == "nasp"
    ckpt = torch.load(tmp_path / "search" / "checkpoint.pt", weights_only=False)
    for kind in ("normal", "reduce"):
        a = ckpt["model"][f"alphas_{kind}"]
        assert float(a.min()) >= 0 and float(a.max()) <= 1 and not torch.all(a == 0.5)
    rows = [json.loads(x) for x in (tmp_path / "search" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["arch_val_loss"] is not None and np.isfinite(rows[-1]["val_loss"])
    retrain_cfg = to_typed(compose("retrain", [f"genotype={tmp_path / 'search'}", *TINY_RETRAIN]))
    retrained = run_retrain(retrain_cfg, tmp_path / "retrain")
    assert retrained["status"] == "completed" and 0.0 <= retrained["test_acc"] <= 1.0
