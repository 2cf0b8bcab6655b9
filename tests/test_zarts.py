"""ZARTS: each zero-order rule on a quadratic with a known minimum, the fine-tuned copy, cadence, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_RETRAIN, TINY_SEARCH, TINY_SYNTH
from nasrun.config.compose import compose, to_typed
from nasrun.methods import ArchBatch, make_estimator
from nasrun.methods.objective import ObjectiveValue
from nasrun.methods.zarts import MGS, finetune_copy
from nasrun.config.options import GLDConf, MGSConf, RSConf
from nasrun.train.retrain import run_retrain
from nasrun.search.loop import run_search

TARGET = torch.tensor([[0.6, -0.4, 0.3], [-0.2, 0.5, -0.7]], dtype=torch.float64)


class Quadratic(nn.Module):
    """``L = 0.5 |alpha - TARGET|^2 + |w|^2`` per sample: the alpha minimum is TARGET whatever w is."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros_like(TARGET))
        self.w = nn.Parameter(torch.ones(4, dtype=torch.float64))

    def arch_parameters(self):
        return [self.alpha]

    def weight_parameters(self):
        return [self.w]

    def forward(self, x, mix=None):
        value = 0.5 * ((self.alpha - TARGET) ** 2).sum() + (self.w**2).sum()
        return value.expand(x.shape[0], 1)


def _mean_loss(model, x, y, mix=None):
    """The objective of the quadratic: the mean of its output (it has no mixing weights)."""
    out = model(x)
    loss = out.mean()
    return ObjectiveValue(loss, loss, out)


def _distance(model) -> float:
    return float((model.alpha.detach() - TARGET).norm())


@pytest.mark.parametrize("rule,kw,updates", [
    ("mgs", dict(sigma=0.05, tau=0.01), 1),
    ("rs", dict(rs_lr=2.0, rs_radius=0.05, samples=6), 15),
    ("gld", dict(gld_radius=0.5, gld_levels=4), 40),
])
def test_each_rule_moves_alpha_toward_the_minimum_of_a_quadratic(rule, kw, updates):
    cfg = {"mgs": MGSConf, "rs": RSConf, "gld": GLDConf}[rule](**{"inner_steps": 2, "inner_lr": 0.1, **kw})
    est = make_estimator(cfg)
    est.objective = _mean_loss
    est.generator.manual_seed(0)
    model = Quadratic()
    x = torch.zeros(4, 1, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    start = _distance(model)
    for _ in range(updates):
        arch = est(model, ArchBatch(x, y, x, y, None, 0.1))
        assert arch.grads is None and arch.update is not None
        with torch.no_grad():
            model.alpha.add_(arch.update[0])
    assert torch.equal(model.w.detach(), torch.ones(4, dtype=torch.float64))  # only copies were fine-tuned
    assert _distance(model) < 0.5 * start


def test_fine_tuning_changes_the_copy_and_leaves_the_live_model_alone(tiny_net, tiny_batches):
    xt, yt, xv, yv = tiny_batches
    weights = [p.detach().clone() for p in tiny_net.weight_parameters()]
    buffers = [b.detach().clone() for b in tiny_net.buffers()]
    alphas = [a.detach() + 0.1 for a in tiny_net.arch_parameters()]
    copy = finetune_copy(tiny_net, alphas, [(xt, yt), (xv, yv)], lr=0.05)
    moved = [not torch.equal(c, w) for c, w in zip(copy.weight_parameters(), weights)]
    assert sum(moved) > len(moved) // 2
    for c, a in zip(copy.arch_parameters(), alphas):
        assert torch.equal(c, a)
    for p, w in zip(tiny_net.weight_parameters(), weights):
        assert torch.equal(p, w) and p.grad is None
    for b, s in zip(tiny_net.buffers(), buffers):
        assert torch.equal(b, s)
    # no fine-tuning steps: the copy scores the candidate at the live weights
    same = finetune_copy(tiny_net, alphas, [], lr=0.05)
    assert all(torch.equal(c, w) for c, w in zip(same.weight_parameters(), weights))


def test_mgs_moves_alpha_every_few_steps_and_leaves_the_live_weights(tiny_net, tiny_batches):
    est = make_estimator(MGSConf(update_every=3, inner_steps=2, samples=3))
    weights = [p.detach().clone() for p in tiny_net.weight_parameters()]
    outs = [est(tiny_net, ArchBatch(*tiny_batches, None, 0.1, step=s)) for s in range(4)]
    assert [o is None for o in outs] == [False, True, True, False]
    assert set(outs[0].stats) >= {"zo_sigma", "zo_ess", "zo_step_norm"} and 1 <= outs[0].stats["zo_ess"] <= 3
    assert all(torch.equal(p, w) for p, w in zip(tiny_net.weight_parameters(), weights))


def test_mgs_density_forms():
    g = [torch.tensor([3.0, 4.0])]  # |g| = 5
    u = [torch.tensor([-3.0, -4.0])]  # = -g, |u| = 5
    corrected = MGS(conf=MGSConf(sigma=2.0, mix_lambda=0.5, density="corrected"), seed=0)
    released = MGS(conf=MGSConf(sigma=2.0, mix_lambda=0.5, density="released"), seed=0)
    np.testing.assert_allclose(corrected.proposal_density(u, g, 2.0), 0.5 + 0.5 * np.exp(-25 / 8))
    np.testing.assert_allclose(released.proposal_density(u, g, 2.0), 0.5 + 0.5 * np.exp(-25 / 2 * 4))


def test_sigma_follows_a_cosine_from_the_first_update():
    est = MGS(conf=MGSConf(sigma=0.1), seed=0)
    est.first_epoch = 10
    assert [round(est.sigma(e, 50), 6) for e in (10, 30)] == [0.1, 0.05]
    assert MGS(conf=MGSConf(sigma=0.1, sigma_schedule="constant"), seed=0).sigma(30, 50) == 0.1


ZARTS_TINY = ["method=zarts", "search.arch_warmup_epochs=0", "estimator.update_every=2", "estimator.inner_steps=2",
              "estimator.samples=2", "estimator.inner_batch_size=8"]


class Stop(Exception):
    pass


def test_zarts_resumes_to_the_same_alphas(tmp_path: Path):
    cfg = to_typed(compose("search", [*TINY_SYNTH, *ZARTS_TINY, "search.epochs=2", "seed=3"]))
    straight = run_search(cfg, tmp_path / "straight")

    def stop(epoch: int, row: dict) -> None:
        raise Stop

    with pytest.raises(Stop):
        run_search(cfg, tmp_path / "resumed", on_epoch_end=stop)
    resumed = run_search(cfg, tmp_path / "resumed")
    assert resumed["genotype"] == straight["genotype"]
    a, b = np.load(tmp_path / "straight" / "alphas.npz"), np.load(tmp_path / "resumed" / "alphas.npz")
    np.testing.assert_array_equal(a["normal"], b["normal"])
    np.testing.assert_array_equal(a["reduce"], b["reduce"])
    assert not np.array_equal(a["normal"][0], a["normal"][1])  # alpha did move


@pytest.mark.parametrize("rule", ["rs", "gld"])
def test_reconstructed_rules_run_in_the_loop(tmp_path: Path, rule: str):
    # gld_levels is a key of estimator=gld only (rs has no levels; the old flat config ignored it there)
    levels = ["estimator.gld_levels=1"] if rule == "gld" else []
    cfg = to_typed(compose("search", [*TINY_SYNTH, *ZARTS_TINY, f"estimator={rule}", *levels,
                                      "estimator.update_every=3", "search.epochs=1"]))
    result = run_search(cfg, tmp_path / "run")
    assert result["status"] == "completed"
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["zo_step_norm"] >= 0 and row["arch_val_loss"] is not None


def test_zarts_preset_searches_and_retrains_on_digits(tmp_path: Path):
    cfg = to_typed(compose("search", ["method=zarts"]))
    assert (cfg.estimator.name, cfg.search.arch_warmup_epochs, cfg.estimator.inner_steps, cfg.estimator.samples) == (
        "mgs", 10, 10, 4)
    cfg = to_typed(compose("search", [*TINY_SEARCH, *ZARTS_TINY, "estimator.update_every=11", "search.epochs=1"]))
    result = run_search(cfg, tmp_path / "search")
    assert result["status"] == "completed" and result["method"] == "zarts"
    retrain_cfg = to_typed(compose("retrain", [f"genotype={tmp_path / 'search'}", *TINY_RETRAIN]))
    retrained = run_retrain(retrain_cfg, tmp_path / "retrain")
    assert retrained["status"] == "completed" and 0.0 <= retrained["test_acc"] <= 1.0
