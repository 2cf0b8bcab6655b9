"""DrNAS' progressive learning (``schedule=widening``): the widening against the released net2wider, what a stage
change carries over, resume across it, and the fused and plain supernets through it.

The reference below is xiangning-chen/DrNAS ``net2wider.py`` and the ops' ``wider`` in ``DARTS-space/operations.py``
written out here: ``OutChannelWider`` appends ``w[idx]`` along the output channels with ``idx`` drawn by
``torch.randint(0, out, (new - out,))`` from the global generator, ``InChannelWider`` ``w[:, idx]`` along the
input channels, ``BNWider`` the running statistics at ``idx``; within an op the indices chain (depthwise outputs
are the next pointwise conv's inputs, a pointwise conv's outputs its BN's), and FactorizedReduce's BN copies
``cat(idx_1, idx_2)``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY_SYNTH
from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.search.loop import _new_state, run_search, train_epoch
from nasrun.spaces.ops import DilConv, FactorizedReduce, ReLUConvBN, SepConv
from nasrun.supernet.widen import _Planner, _plan_op, plain_momentum, widen_state, widening_plan


# ------------------------------------------------------------------ the released widening, written out
def _out(w: torch.Tensor, new: int, idx=None):
    idx = torch.randint(0, w.shape[0], (new - w.shape[0],)) if idx is None else idx
    return torch.cat([w, w[idx].clone()], 0), idx


def _in(w: torch.Tensor, new: int, idx=None):
    idx = torch.randint(0, w.shape[1], (new - w.shape[1],)) if idx is None else idx
    return torch.cat([w, w[:, idx].clone()], 1), idx


def _bn(bn, new: int, idx=None) -> dict:
    idx = torch.randint(0, bn.num_features, (new - bn.num_features,)) if idx is None else idx
    return {"running_mean": torch.cat([bn.running_mean, bn.running_mean[idx]]),
            "running_var": torch.cat([bn.running_var, bn.running_var[idx]])}


def _released(op, new: int) -> dict:
    out = {}
    if isinstance(op, SepConv):
        for a, b, c in ((1, 2, 3), (5, 6, 7)):
            out[f"op.{a}.weight"], i = _out(op.op[a].weight, new)
            w, _ = _in(op.op[b].weight, new, i)
            out[f"op.{b}.weight"], i = _out(w, new)
            out.update({f"op.{c}.{k}": v for k, v in _bn(op.op[c], new, i).items()})
    elif isinstance(op, DilConv):
        out["op.1.weight"], i = _out(op.op[1].weight, new)
        w, _ = _in(op.op[2].weight, new, i)
        out["op.2.weight"], i = _out(w, new)
        out.update({f"op.3.{k}": v for k, v in _bn(op.op[3], new, i).items()})
    elif isinstance(op, ReLUConvBN):
        w, _ = _in(op.op[1].weight, new)
        out["op.1.weight"], i = _out(w, new)
        out.update({f"op.2.{k}": v for k, v in _bn(op.op[2], new, i).items()})
    elif isinstance(op, FactorizedReduce):
        w, _ = _in(op.conv_1.weight, new)
        out["conv_1.weight"], i1 = _out(w, new // 2)
        w, _ = _in(op.conv_2.weight, new)
        out["conv_2.weight"], i2 = _out(w, new - new // 2)
        out.update({f"bn.{k}": v for k, v in _bn(op.bn, new, torch.cat([i1, i2])).items()})
    return out


@pytest.mark.parametrize("make", [lambda C: SepConv(C, C, 3, 1, 1, affine=False),
                                  lambda C: DilConv(C, C, 5, 2, 4, 2, affine=False),
                                  lambda C: ReLUConvBN(C, C, 3, 1, 1, affine=False),
                                  lambda C: FactorizedReduce(C, C, affine=False)])
def test_the_widening_copies_the_channels_drnas_net2wider_copies(make):
    torch.manual_seed(0)
    op = make(6)
    for m in op.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    torch.manual_seed(11)
    expected = _released(op, 9)
    generator = torch.Generator().manual_seed(11)
    planner = _Planner("", generator, 9)
    _plan_op(planner, op)
    got = widen_state(op.state_dict(), planner.plan)
    assert set(expected) <= set(planner.plan)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    for key, value in got.items():
        assert value.dim() == 0 or value.shape[0] in (9, 4, 5), key  # every channel axis widened, counters kept


STAGES = [*TINY_SYNTH, "supernet.C=4", "space.ops=[none,max_pool_3x3,skip_connect,sep_conv_3x3,dil_conv_3x3]",
          "schedule=widening", "schedule.stage_partial_channels=[4,2]", "schedule.stage_ops=[null,2]",
          "alpha_map=dirichlet", "precision=fp64", "search.epochs=1"]


def _state(*overrides: str):
    from nasrun.data.datasets import search_split
    from nasrun.data.load import load_dataset

    cfg = to_typed(compose("search", [*STAGES, *overrides]))
    data = load_dataset(cfg.dataset)
    train_idx, val_idx = search_split(len(data.train), cfg.dataset.search_split, cfg.seed)
    torch.manual_seed(cfg.seed)
    return _new_state(cfg, cfg.dataset, data, train_idx, val_idx, torch.device("cpu"))


@pytest.mark.parametrize("fused", ["true", "false"])
def test_a_stage_change_carries_the_widened_weights_momentum_alphas_adam_and_lr(fused):
    state = _state(f"supernet.fused={fused}")
    schedule = state.schedule
    train_epoch(state, schedule.plan(0), state.lr_schedule.get_last_lr()[0])
    state.lr_schedule.step()
    old = state.model
    before = {k: v.clone() for k, v in old.state_dict().items()}
    momentum = {k: v.clone() for k, v in plain_momentum(old, state.w_opt).items()}
    adam = {k: v.clone() for k, v in state.a_opt.state[old.alphas("normal")].items()}
    lr = state.w_opt.param_groups[0]["lr"]
    record = schedule.end_stage(old, 0)
    state.widen_stage(1, record["next_edge_ops"])
    new = state.model
    assert {m.partial_channels for m in new.modules() if hasattr(m, "partial_channels") and hasattr(m, "C_op")} == {2}
    plan = widening_plan(old, 2, torch.Generator().manual_seed(state.cfg.seed * 1000 + 5 + 1))
    widened, widened_momentum = widen_state(before, plan), widen_state(momentum, plan)
    after = new.state_dict()
    moved = 0
    for name, edge in ((n, m) for n, m in old.named_modules() if hasattr(m, "op_names")):
        new_edge = new.get_submodule(name)
        for j, op in enumerate(new_edge.op_names):
            k = edge.op_names.index(op)
            for key, value in widened.items():
                if key.startswith(f"{name}.ops.{k}."):
                    assert torch.equal(after[key.replace(f".ops.{k}.", f".ops.{j}.", 1)], value), key
                    moved += 1
    assert moved > 0
    cols = torch.tensor([[row.index(c) for c in new_row] for row, new_row in
                         zip(old.edge_ops["normal"], new.edge_ops["normal"])])
    assert torch.equal(new.alphas("normal").detach(), before["alphas_normal"].gather(1, cols))
    assert torch.equal(state.a_opt.state[new.alphas("normal")]["exp_avg"], adam["exp_avg"].gather(1, cols))
    assert state.w_opt.param_groups[0]["lr"] == lr and state.lr_schedule.last_epoch == 1
    assert state.lr_schedule.T_max == schedule.total_epochs == 2
    carried, checked = plain_momentum(new, state.w_opt), 0
    for name, edge in ((n, m) for n, m in old.named_modules() if hasattr(m, "op_names")):
        names = new.get_submodule(name).op_names
        for k, op in enumerate(edge.op_names):
            for key, value in widened_momentum.items():
                if op in names and key.startswith(f"{name}.ops.{k}."):
                    assert torch.equal(carried[key.replace(f".ops.{k}.", f".ops.{names.index(op)}.", 1)], value)
                    checked += 1
    assert checked > 0


def test_fused_and_plain_widening_searches_end_alike_and_resume_exactly(tmp_path):
    from nasrun.run.signals import Interrupted

    runs = {}
    for fused in ("true", "false"):
        cfg = to_typed(compose("search", [*STAGES, f"supernet.fused={fused}"]))
        runs[fused] = run_search(cfg, tmp_path / fused)
    a, b = (np.load(tmp_path / f / "alphas.npz")["normal"] for f in ("true", "false"))
    assert a.shape[0] == 2 and np.allclose(a, b, atol=1e-10)
    assert runs["true"]["genotype"]["cells"] == runs["false"]["genotype"]["cells"]
    stages = json.loads((tmp_path / "true" / "stages.json").read_text())
    assert [len(s["kept"]["normal"][0]) for s in stages] == [2, 2]
    rows = [json.loads(x) for x in (tmp_path / "true" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.025, 0.013])  # one cosine over both stages: 0.025 to 0.001

    cfg = to_typed(compose("search", [*STAGES, "supernet.fused=true"]))

    def stop(epoch, row):
        if epoch == 0:  # the checkpoint at the end of the first stage; the stage change comes on resume
            raise Interrupted(15)

    with pytest.raises(Interrupted):
        run_search(cfg, tmp_path / "resumed", on_epoch_end=stop)
    run_search(cfg, tmp_path / "resumed")
    c = np.load(tmp_path / "resumed" / "alphas.npz")["normal"]
    assert np.array_equal(a, c)


def test_what_the_widening_schedule_refuses():
    for overrides, words in [(["method=drnas", "supernet.C=16"], r"supernet.C=16 is not allowed: a multiple of every"),
                             (["schedule=widening", "supernet.C=12", "supernet.partial_channels=2"],
                              "supernet.partial_channels=2 is not allowed: 1 with schedule=widening"),
                             (["schedule=widening", "supernet.C=12", "method=darts_minus"], "supernet.aux_skip"),
                             (["schedule=widening", "supernet.C=12", "space=rdarts_s4"], "cannot widen noise"),
                             (["schedule=widening", "schedule.stage_partial_channels=[2,4]"], "never increase"),
                             (["schedule=widening", "schedule.stage_ops=[4,null]"], "null \\(every op\\) for the first"),
                             (["method=drnas", "schedule=single"], "schedule=single is not allowed with method=drnas")]:
        with pytest.raises(ConfigError, match=words):
            to_typed(compose("search", overrides))
    darts = to_typed(compose("search", ["method=drnas"]))
    assert (darts.schedule.stage_partial_channels, darts.schedule.stage_ops, darts.supernet.C, darts.supernet.layers,
            darts.search.epochs) == ([6, 4], [None, 4], 36, 20, 25)
    nb201 = to_typed(compose("search", ["method=drnas", "space=nb201"]))
    assert (nb201.schedule.stage_partial_channels, nb201.search.epochs) == ([1], 100)
