"""SDARTS: random smoothing and PGD perturbations of the mixing weights in the weight step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY_RETRAIN, TINY_SEARCH
from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.methods import make_estimator, make_perturbation, make_schedule
from nasrun.methods.perturbations import epsilon_at, pgd_attack, project_ball_simplex, renorm, uniform_noise
from nasrun.config.options import AdversarialConf, FirstOrderConf, NoPerturbationConf, RandomConf
from nasrun.train.retrain import run_retrain
from nasrun.search.loop import run_search, train_epoch
from nasrun.search.state import SearchState




def _on_simplex(a: torch.Tensor) -> None:
    assert bool((a >= 0).all())
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[0], dtype=a.dtype), rtol=0, atol=1e-9)


def test_renorm_is_the_released_rule():
    a = torch.tensor([[0.5, -0.2, 0.9], [-0.1, -0.3, -0.2], [0.2, 0.2, 0.2]], dtype=torch.float64)
    out = renorm(a)
    _on_simplex(out)
    torch.testing.assert_close(out[0], torch.tensor([0.5, 0.0, 0.9], dtype=torch.float64) / 1.4)
    torch.testing.assert_close(out[1], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))  # all clamped: old max wins
    torch.testing.assert_close(out[2], torch.full((3,), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.3, 0.9])
def test_projection_stays_in_the_ball_and_on_the_simplex(eps):
    g = torch.Generator().manual_seed(0)
    center = torch.softmax(torch.randn(14, 8, generator=g, dtype=torch.float64) * 2, -1)
    v = center + torch.randn(14, 8, generator=g, dtype=torch.float64)
    out = project_ball_simplex(v, center, eps)
    _on_simplex(out)
    assert float((out - center).abs().max()) <= eps + 1e-9
    # a point already in the set is its own projection
    inside = project_ball_simplex(center, center, eps)
    torch.testing.assert_close(inside, center, rtol=0, atol=1e-9)


@pytest.mark.parametrize("simplex", ["renorm", "project"])
def test_random_smoothing_perturbs_within_epsilon_on_the_simplex(tiny_net, simplex):
    eps = 0.2
    perturb = make_perturbation(RandomConf(epsilon=eps, epsilon_start=eps, simplex=simplex))
    clean = {k: v.detach().clone() for k, v in tiny_net.mixing_weights().items()}
    torch.manual_seed(3)
    mix = perturb(tiny_net, None, None, 0, 10)
    for kind in ("normal", "reduce"):
        _on_simplex(mix[kind])
        assert mix[kind].grad_fn is None  # no path back to the alphas
        shift = float((mix[kind].detach() - clean[kind]).abs().max())
        assert shift > 0.01
        if simplex == "project":
            assert shift <= eps + 1e-9
    # renorm (as released) draws the noise in the ball, then divides each row by its sum, which
    # can move an entry a little further than eps: only the projection keeps the ball exactly
    torch.manual_seed(3)
    noise = uniform_noise(clean["normal"], eps)
    assert float(noise.abs().max()) <= eps
    # the same noise comes from the same (CPU) generator state
    torch.manual_seed(3)
    again = perturb(tiny_net, None, None, 0, 10)
    assert torch.equal(again["normal"], mix["normal"])


def test_epsilon_ramps():
    code = RandomConf(epsilon=0.3, epsilon_start=0.03, epsilon_ramp="code")
    to_max = RandomConf(epsilon=0.3, epsilon_start=0.03, epsilon_ramp="to_max")
    assert epsilon_at(code, 0, 50) == pytest.approx(0.03)
    assert epsilon_at(code, 49, 50) == pytest.approx(0.3 - 0.27 / 50)  # as released: never the maximum
    assert epsilon_at(to_max, 49, 50) == pytest.approx(0.3)
    assert epsilon_at(to_max, 0, 1) == pytest.approx(0.03)


class _Stream:
    def __init__(self, batches):
        self.batches, self.i, self.batches_per_pass = batches, 0, len(batches)

    def __next__(self):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b


def _weight_step(net, perturbation, batches):
    """One epoch (one step) of the search loop on ``net`` with the alphas frozen: epoch 3 of 10, grad clip 5."""
    xt, yt, xv, yv = batches
    cfg = to_typed(compose("search", [*TINY_SEARCH, "search.grad_clip=5.0", "search.epochs=10",
                                      "search.arch_warmup_epochs=10"]))
    schedule = make_schedule(cfg.schedule, cfg.supernet.layers, [0.0], epochs=10, warmup=10)
    with torch.random.fork_rng():  # building the state's own supernet must not move the caller's seed
        state = SearchState(cfg, 3, 1, torch.device("cpu"), schedule, make_estimator(FirstOrderConf()), perturbation,
                            _Stream([(xt, yt)]), _Stream([(xv, yv)]))
    state.model = net  # the loop trains the test's supernet with the test's optimisers
    state.w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    state.a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.1)
    plan = schedule.plan(3)
    assert (plan.stage_epoch, schedule.epochs, plan.arch_active) == (3, 10, False)
    train_epoch(state, plan, 0.1)


@pytest.mark.parametrize("kind", ["random", "adversarial"])
def test_clean_alphas_are_untouched_by_the_perturbed_weight_step(tiny_net, tiny_batches, kind):
    import copy

    plain = copy.deepcopy(tiny_net)
    alphas = [a.detach().clone() for a in tiny_net.arch_parameters()]
    torch.manual_seed(0)
    conf = RandomConf(epsilon=0.3) if kind == "random" else AdversarialConf(epsilon=0.3, pgd_steps=2)
    _weight_step(tiny_net, make_perturbation(conf), tiny_batches)
    for a, before in zip(tiny_net.arch_parameters(), alphas):
        assert torch.equal(a.detach(), before)  # bit for bit
        assert a.grad is None
    torch.manual_seed(0)
    _weight_step(plain, make_perturbation(NoPerturbationConf()), tiny_batches)
    moved = [not torch.equal(a, b) for a, b in zip(tiny_net.weight_parameters(), plain.weight_parameters())]
    assert any(moved), "the weight step trained under the perturbed weights, so the weights differ from plain DARTS"


def test_ops_weighted_zero_by_the_noise_still_train(tiny_net, tiny_batches):
    """As released, an op whose perturbed weight is 0 still runs in the weight step, so its weights
    get a (zero) gradient and keep their momentum and weight decay."""
    xt, yt, _, _ = tiny_batches
    torch.manual_seed(0)
    mix = make_perturbation(RandomConf(epsilon=0.9, epsilon_start=0.9))(tiny_net, xt, yt, 0, 1)
    assert any(bool((m == 0).any()) for m in mix.values())
    F.cross_entropy(tiny_net(xt, mix), yt).backward()
    assert all(p.grad is not None for p in tiny_net.weight_parameters())


class _Linear(nn.Module):
    """Two ops per edge, logits (sum(c * A), 0) and label 1: the loss grows with sum(c * A).

    Over the epsilon ball intersected with the simplex its maximum is A + eps * s * (1, -1) per row,
    s = sign(c_0 - c_1) (while every weight is at least eps), and PGD must land exactly there.
    With ``bowl`` the loss is instead smallest at the clean weights, so no perturbation can raise it.
    """

    def __init__(self, bowl: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.alphas = {k: 0.3 * torch.randn(3, 2, generator=g, dtype=torch.float64) for k in ("normal", "reduce")}
        # opposite signs within a row, so the sign of the gradient points straight at the maximiser
        # (sign steps cannot tell apart two ops whose gradients share a sign)
        self.c = {k: torch.randn(3, 1, generator=g, dtype=torch.float64) * torch.tensor([1.0, -0.5], dtype=torch.float64)
                  for k in ("normal", "reduce")}
        self.bowl = bowl
        self.modes: list[bool] = []
        self.alpha_map = None  # as a supernet without a map: softmax weights, no regulariser (ArchObjective reads it)

    def mixing_weights(self):
        return {k: torch.softmax(a, -1) for k, a in self.alphas.items()}

    def forward(self, x, mix):
        self.modes.append(self.training)
        if self.bowl:
            clean = self.mixing_weights()
            z = 100 * sum(((mix[k] - clean[k]) ** 2).sum() for k in mix)
        else:
            z = sum((self.c[k] * mix[k]).sum() for k in mix)
        return torch.stack([-z if self.bowl else z, torch.zeros_like(z)]).expand(x.shape[0], 2)


@pytest.mark.parametrize("simplex", ["renorm", "project"])
def test_pgd_finds_the_maximiser_of_a_loss_whose_gradient_is_known(simplex):
    model = _Linear().train()
    x, y = torch.zeros(4, 1), torch.ones(4, dtype=torch.long)
    clean = model.mixing_weights()
    eps = 0.05
    assert all(float(v.min()) > eps for v in clean.values())
    torch.manual_seed(0)
    mix, kept = pgd_attack(model, x, y, eps=eps, steps=7, simplex=simplex)
    assert model.modes and not any(model.modes)  # every forward of the attack ran in eval mode
    assert model.training  # and the mode is restored
    assert kept
    for k in mix:
        s = torch.sign(model.c[k][:, 0] - model.c[k][:, 1])
        expected = clean[k] + eps * torch.stack([s, -s], dim=1)
        torch.testing.assert_close(mix[k], expected, rtol=0, atol=1e-12)
        _on_simplex(mix[k])
    loss = lambda mix: float(F.cross_entropy(model(x, mix), y))  # noqa: E731
    assert loss(mix) > loss(clean)


def test_pgd_keeps_the_clean_weights_when_it_cannot_raise_the_loss():
    model = _Linear(bowl=True).train()
    x, y = torch.zeros(4, 1), torch.ones(4, dtype=torch.long)
    torch.manual_seed(0)
    mix, kept = pgd_attack(model, x, y, eps=0.05, steps=3)
    assert not kept
    for k, clean in model.mixing_weights().items():
        assert torch.equal(mix[k], clean)


def test_pgd_leaves_batchnorm_statistics_and_weight_gradients_alone(tiny_net, tiny_batches):
    xt, yt, _, _ = tiny_batches
    tiny_net.train()
    stats = [b.clone() for b in tiny_net.buffers()]
    pgd_attack(tiny_net, xt, yt, eps=0.3, steps=2)
    assert all(torch.equal(a, b) for a, b in zip(tiny_net.buffers(), stats))
    assert all(p.grad is None for p in tiny_net.parameters())
    assert tiny_net.training


def test_bad_epsilon_is_refused():
    with pytest.raises(ConfigError, match="perturbation.epsilon_start"):
        to_typed(compose("search", ["method=sdarts_rs", "perturbation.epsilon_start=0.5"]))
    with pytest.raises(ConfigError, match="perturbation.simplex"):
        to_typed(compose("search", ["method=sdarts_adv", "perturbation.simplex=euclid"]))


@pytest.mark.parametrize("method", ["sdarts_rs", "sdarts_adv"])
def test_preset_searches_and_retrains_on_digits(tmp_path: Path, method):
    cfg = to_typed(compose("search", [*TINY_SEARCH, f"method={method}", "dataset.subset=16"]))
    assert cfg.perturbation.name == ("random" if method == "sdarts_rs" else "adversarial")
    result = run_search(cfg, tmp_path / "search")
    assert result["status"] == "completed" and result["method"] == method
    retrain = run_retrain(to_typed(compose("retrain", [f"genotype={tmp_path / 'search'}", *TINY_RETRAIN])),
                          tmp_path / "retrain")
    assert retrain["status"] == "completed"
