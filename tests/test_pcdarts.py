"""PC-DARTS: partial channel connections, channel shuffle and edge normalisation in the supernet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_OPS, TINY_RETRAIN, TINY_SEARCH, TINY_SYNTH
from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.train.retrain import run_retrain
from nasrun.run.checkpoint import load_checkpoint
from nasrun.search.loop import run_search
from nasrun.spaces import DARTS_OPS
from nasrun.spaces.space import derive
from nasrun.supernet import MixedOp, SuperNet, channel_shuffle




def _net(seed=0, **kw) -> SuperNet:
    torch.manual_seed(seed)
    return SuperNet(C=4, num_classes=3, layers=3, ops=TINY_OPS, nodes=2, in_channels=1, **kw)


def test_partial_channels_must_divide_C():
    with pytest.raises(ConfigError, match=r"supernet.partial_channels=3 .*must divide supernet.C \(16\)"):
        to_typed(compose("search", ["supernet.partial_channels=3"]))
    with pytest.raises(ConfigError, match="supernet.partial_channels"):
        to_typed(compose("search", ["supernet.partial_channels=0"]))
    with pytest.raises(ValueError, match="divide"):
        SuperNet(C=6, num_classes=3, layers=3, ops=TINY_OPS, nodes=2, partial_channels=4)


def test_k1_without_edge_norm_is_the_plain_supernet():
    plain = _net(seed=0)
    options = _net(seed=1, partial_channels=1, edge_norm=False)
    assert list(plain.state_dict()) == list(options.state_dict())
    options.load_state_dict(plain.state_dict())
    x = torch.randn(4, 1, 8, 8)
    for train in (True, False):
        plain.train(train), options.train(train)
        assert torch.equal(plain(x), options(x))
    assert plain.genotype() == options.genotype()


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert torch.equal(channel_shuffle(x, 1), x)


@pytest.mark.parametrize("stride", [1, 2])
def test_only_a_quarter_of_the_channels_go_through_the_ops(stride):
    torch.manual_seed(0)
    op = MixedOp(8, stride, DARTS_OPS, partial_channels=4)
    assert all(m.in_channels == 2 for m in op.modules() if isinstance(m, torch.nn.Conv2d))  # the ops are built for C/K
    x = torch.randn(2, 8, 6, 6)
    out = op(x, torch.softmax(torch.randn(len(DARTS_OPS)), -1))
    assert out.shape == (2, 8, 6 // stride, 6 // stride)
    # undo the shuffle: the last 3/4 of the channels bypassed the edge (max-pooled when it strides)
    unshuffled = out.view(2, 2, 4, *out.shape[2:]).transpose(1, 2).reshape(out.shape)
    bypass = x[:, 2:] if stride == 1 else F.max_pool2d(x[:, 2:], 2, 2)
    assert torch.equal(unshuffled[:, 2:], bypass)


def test_edge_norm_betas_are_architecture_parameters():
    net = _net(edge_norm=True)
    arch = net.arch_parameters()
    assert [a.shape for a in arch] == [(5, 4), (5, 4), (5,), (5,)]
    assert arch[2] is net.betas_normal and arch[3] is net.betas_reduce
    assert {"betas_normal", "betas_reduce"} <= set(net.state_dict())
    assert all(w is not b for w in net.weight_parameters() for b in arch)
    edges = net.edge_weights()["normal"]
    torch.testing.assert_close(edges[:2].sum(), torch.tensor(1.0))  # node 0: edges 0-1
    torch.testing.assert_close(edges[2:].sum(), torch.tensor(1.0))  # node 1: edges 2-4
    F.cross_entropy(net(torch.randn(2, 1, 8, 8)), torch.tensor([0, 1])).backward()
    assert float(net.betas_normal.grad.abs().sum()) > 0 and float(net.betas_reduce.grad.abs().sum()) > 0


def test_genotype_weighs_ops_by_the_edge_weights():
    net = _net(edge_norm=True)
    with torch.no_grad():
        for a in (net.alphas_normal, net.alphas_reduce):
            a.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]).expand_as(a))  # the same op weights on every edge
            a[3, 3] = 1.5  # edge 3 (node 1 <- state 1) slightly prefers its conv
        net.betas_normal.copy_(torch.tensor([0.0, 0.0, 3.0, -3.0, 0.0]))  # node 1 strongly prefers edge 2
    g = net.genotype()
    assert sorted(src for _, src in g.normal[2:]) == [0, 2]  # edges 2 (state 0) and 4 (state 2), not 3
    w = net.vocabulary_weights()
    assert g == derive(w["normal"], w["reduce"], net.ops, nodes=2)
    without = derive(*(net.vocabulary_weights(with_edges=False)[k] for k in ("normal", "reduce")), net.ops, nodes=2)
    assert 1 in [src for _, src in without.normal[2:]]  # alphas alone would keep edge 3


def _saved_bytes(K: int) -> int:
    """Bytes autograd keeps for the backward of one supernet forward (the activation memory)."""
    torch.manual_seed(0)
    net = SuperNet(C=8, num_classes=10, layers=3, ops=DARTS_OPS, nodes=2, in_channels=1, partial_channels=K,
                   edge_norm=K > 1)
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(torch.randn(16, 1, 8, 8))
    return sum(seen.values())


def test_activation_memory_falls_with_K():
    sizes = {K: _saved_bytes(K) for K in (1, 2, 4)}
    print("saved-for-backward bytes by K:", sizes)
    assert sizes[1] > sizes[2] > sizes[4]
    assert sizes[4] < 0.6 * sizes[1]


def test_preset_searches_and_retrains_on_digits(tmp_path: Path):
    cfg = to_typed(compose("search", [*TINY_SEARCH, "method=pcdarts", "dataset.subset=16", "search.batch_size=32",
                                      "supernet.partial_channels=2", "search.arch_warmup_epochs=1"]))
    assert (cfg.supernet.edge_norm, cfg.search.lr, cfg.search.arch_lr) == (True, 0.1, 6e-4)
    result = run_search(cfg, tmp_path / "search")
    assert result["status"] == "completed" and result["method"] == "pcdarts"
    rows = [json.loads(line) for line in (tmp_path / "search" / "metrics.jsonl").read_text().splitlines()]
    assert [r["arch_active"] for r in rows] == [False, True]
    alphas = np.load(tmp_path / "search" / "alphas.npz")
    assert alphas["edges_normal"].shape == (2, 5)  # epochs x edges: the edge weights are recorded too
    assert not np.array_equal(alphas["edges_normal"][0], alphas["edges_normal"][1])  # the betas are optimised
    assert {"betas_normal", "betas_reduce"} <= set(load_checkpoint(tmp_path / "search")["model"])
    retrain = run_retrain(to_typed(compose("retrain", [f"genotype={tmp_path / 'search'}", *TINY_RETRAIN])),
                          tmp_path / "retrain")
    assert retrain["status"] == "completed"


@pytest.mark.parametrize("method", ["amended", "darts_2nd"])
def test_partial_channels_and_edge_norm_compose_with_other_estimators(tmp_path: Path, method):
    cfg = to_typed(compose("search", [*TINY_SYNTH, f"method={method}", "search.epochs=1", "supernet.C=4",
                                      "supernet.partial_channels=4", "supernet.edge_norm=true"]))
    result = run_search(cfg, tmp_path / "run")
    assert result["status"] == "completed"
    assert np.load(tmp_path / "run" / "alphas.npz")["edges_normal"].shape == (1, 5)
    adam = load_checkpoint(tmp_path / "run")["arch_optimizer"]["state"]
    assert all(float(adam[i]["exp_avg"].abs().sum()) > 0 for i in (2, 3))  # the betas got the estimator's gradient
