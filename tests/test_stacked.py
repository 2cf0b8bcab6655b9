"""The stacked supernet must compute exactly what its members compute one by one (float64, tiny sizes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nasrun.config.compose import compose, to_typed
from nasrun.search.state import build_supernet
from nasrun.spaces.names import DARTS_OPS
from nasrun.supernet import SuperNet
from nasrun.supernet.stacked import StackedSuperNet, member_loss_sum, stack_inputs

S, C, LAYERS, BATCH, SIZE = 3, 4, 5, 4, 16


@pytest.fixture(scope="module")
def cfg():
    return to_typed(compose("search", [f"supernet.C={C}", f"supernet.layers={LAYERS}", "dataset=digits",
                                       "supernet.fused=false"]))


def build(cfg, seed: int) -> SuperNet:
    torch.manual_seed(seed)
    return build_supernet(cfg, 10, 3, LAYERS).double().train()


@pytest.fixture
def members(cfg) -> list[SuperNet]:
    nets = [build(cfg, m) for m in range(S)]
    with torch.no_grad():  # distinct, non-trivial alphas, so the mixing really differs per member
        for m, net in enumerate(nets):
            for p in net.arch_parameters():
                p.normal_(0.0, 0.5 + 0.25 * m)
    return nets


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(S, BATCH, 3, SIZE, SIZE, dtype=torch.float64, generator=g)
    y = torch.randint(10, (S, BATCH), generator=g)
    return x, y


def test_setup_covers_the_darts_space(members):
    net = members[0]
    assert net.ops == DARTS_OPS and net.kinds == ["normal", "reduce"]
    assert [r for _, r in net.positions] == [False, True, False, True, False]
    # the members really differ, or equal results would prove nothing
    assert not torch.equal(members[0].stem[0].weight, members[1].stem[0].weight)


def test_logits_match_each_member(members, batch):
    x, _ = batch
    stacked = StackedSuperNet(members)
    out = stacked(stack_inputs(x))
    assert out.shape == (BATCH, S, 10)
    for m, net in enumerate(members):
        solo = net(x[m])
        assert solo.abs().max() > 1e-3
        torch.testing.assert_close(out[:, m], solo, rtol=0, atol=1e-10)


@pytest.mark.parametrize("layers", [pytest.param(LAYERS, marks=pytest.mark.slow), 3])
def test_pcdarts_members_match_each_member(layers, batch):
    """Partial channels (each member's first C/K channels through the ops, the rest bypassing, max-pooled on
    reduction edges, then shuffled) and edge normalisation (each member's betas): logits and every gradient."""
    cfg = to_typed(compose("search", [f"supernet.C={C}", f"supernet.layers={layers}", "dataset=digits",
                                      "supernet.fused=false", "supernet.partial_channels=2", "supernet.edge_norm=true"]))
    members = []
    for m in range(S):
        torch.manual_seed(m)
        net = build_supernet(cfg, 10, 3, layers).double().train()
        with torch.no_grad():
            for p in net.arch_parameters():
                p.normal_(0.0, 0.5 + 0.25 * m)
        members.append(net)
    x, y = batch
    stacked = StackedSuperNet(members)
    assert [p.shape for p in stacked.arch_parameters()] == [(S, *p.shape) for p in members[0].arch_parameters()]
    member_loss_sum(stacked(stack_inputs(x)), y.T).backward()
    names = dict(stacked.named_parameters())
    for m, net in enumerate(members):
        F.cross_entropy(net(x[m]), y[m]).backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().max() > 0, name
            got = stacked.member_tensor(name, names[name].grad, m)
            torch.testing.assert_close(got, p.grad, rtol=0, atol=1e-10, msg=f"member {m} {name}")


def test_nb201_members_match_each_member(batch):
    """NB201's single-input cells, residual blocks and BN-ReLU head, stacked: logits and every gradient."""
    cfg = to_typed(compose("search", [f"supernet.C={C}", "supernet.layers=1", "dataset=digits", "space=nb201",
                                      "supernet.fused=false"]))
    members = []
    for m in range(S):
        torch.manual_seed(m)
        members.append(build_supernet(cfg, 10, 3, 1).double().train())
    x, y = batch
    stacked = StackedSuperNet(members)
    logits = stacked(stack_inputs(x))
    member_loss_sum(logits, y.T).backward()
    names = dict(stacked.named_parameters())
    for m, net in enumerate(members):
        solo = net(x[m])
        torch.testing.assert_close(logits[:, m], solo, rtol=0, atol=1e-10)
        F.cross_entropy(solo, y[m]).backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().max() > 0, name
            got = stacked.member_tensor(name, names[name].grad, m)
            torch.testing.assert_close(got, p.grad, rtol=0, atol=1e-10, msg=f"member {m} {name}")
    assert any(name.startswith("blocks.") for name in names)


def test_member_concatenation_in_either_layout():
    """The cell's member-major concatenation gives the same tensor from channels-last parts (the CPU's layout)."""
    from nasrun.supernet.stacked_layers import cat_members

    g = torch.Generator().manual_seed(2)
    parts = [torch.randn(2, S * c, 5, 5, dtype=torch.float64, generator=g) for c in (2, 3)]
    plain = cat_members(parts, S)
    last = cat_members([p.contiguous(memory_format=torch.channels_last) for p in parts], S)
    assert last.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()
    assert torch.equal(plain, last)
    # member m's channels are its block of the first part, then its block of the second
    torch.testing.assert_close(plain[:, 5:10], torch.cat([parts[0][:, 2:4], parts[1][:, 3:6]], 1), rtol=0, atol=0)


def test_gradients_match_each_member(members, batch):
    x, y = batch
    stacked = StackedSuperNet(members)
    member_loss_sum(stacked(stack_inputs(x)), y.T).backward()
    for m, net in enumerate(members):
        F.cross_entropy(net(x[m]), y[m]).backward()
    names = dict(stacked.named_parameters())
    assert set(names) == {n for n, _ in members[0].named_parameters()}
    arch = {id(p) for p in stacked.arch_parameters()}
    assert {n for n, p in names.items() if id(p) in arch} == {"alphas_normal", "alphas_reduce"}
    assert names["alphas_normal"].shape == (S, 14, len(DARTS_OPS))
    for m, net in enumerate(members):
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().max() > 0, name
            got = stacked.member_tensor(name, names[name].grad, m)
            torch.testing.assert_close(got, p.grad, rtol=0, atol=1e-10, msg=f"member {m} {name}")


def test_running_statistics_match(members, batch):
    x, _ = batch
    stacked = StackedSuperNet(members)
    with torch.no_grad():
        stacked(stack_inputs(x))
        for m, net in enumerate(members):
            net(x[m])
    for m, net in enumerate(members):
        mine = stacked.member_state_dict(m)
        buffers = dict(net.named_buffers())
        assert len(buffers) > 100
        for name, b in buffers.items():
            if name.endswith("num_batches_tracked"):
                assert int(mine[name]) == int(b) == 1, name
            else:
                torch.testing.assert_close(mine[name], b, rtol=0, atol=1e-12, msg=f"member {m} {name}")
        # the statistics moved away from their initial values (0 and 1)
        assert buffers["cells.4.preprocess1.op.2.running_mean"].abs().max() > 1e-4


def test_member_state_dict_round_trip(cfg, members, batch):
    x, y = batch
    stacked = StackedSuperNet(members)
    opt = torch.optim.SGD(stacked.parameters(), lr=0.1)
    member_loss_sum(stacked(stack_inputs(x)), y.T).backward()  # a step, so the weights leave their init
    opt.step()
    stacked.eval()
    with torch.no_grad():
        out = stacked(stack_inputs(x))
    for m in range(S):
        fresh = build(cfg, 100 + m).eval()
        fresh.load_state_dict(stacked.member_state_dict(m), strict=True)
        with torch.no_grad():
            torch.testing.assert_close(fresh(x[m]), out[:, m], rtol=0, atol=1e-10)
            assert not torch.allclose(fresh(x[m]), members[m].eval()(x[m]), atol=1e-6)


def test_member_state_dict_is_a_copy(members):
    stacked = StackedSuperNet(members)
    sd = stacked.member_state_dict(1)
    sd["stem.0.weight"].zero_()
    assert stacked.stem[0].weight.abs().max() > 0
    torch.testing.assert_close(stacked.member_state_dict(1)["stem.0.weight"], members[1].stem[0].weight)
    with pytest.raises(IndexError):
        stacked.member_state_dict(S)


def test_links_tells_whether_the_members_are_still_views_into_it(members, batch):
    x, y = batch
    net = StackedSuperNet.linked(members)
    assert net.links(members)
    # a stacked step moves each member's own weights: they are the stacked tensors' slices
    member_loss_sum(net(stack_inputs(x)), y.T).backward()
    with torch.no_grad():
        net.stem[0].weight.add_(1.0)
    torch.testing.assert_close(members[2].stem[0].weight, net.member_tensor("stem.0.weight", net.stem[0].weight, 2))
    assert members[2].stem[0].weight.grad.abs().max() > 0
    assert not net.links(members[::-1])  # same memory, other places
    assert not net.links(members[:2])
    members[1].cells[0].preprocess0.op[1].weight.data = members[1].cells[0].preprocess0.op[1].weight.data.clone()
    assert not net.links(members)
    again = StackedSuperNet.linked(members)
    assert again.links(members) and not net.links(members)


@pytest.mark.parametrize("override, feature", [
    ("supernet.fused=true", "fused"),
    ("space=rdarts_s4", "ops outside"),
    ("method=snas", "non-softmax alpha map"),
])
def test_refuses_unsupported_members(override, feature):
    """(PC-DARTS' partial channels and edge normalisation are stacked: see test_pcdarts_members_match_each_member.)"""
    cfg = to_typed(compose("search", [f"supernet.C={C}", "supernet.layers=3", "dataset=digits",
                                      "supernet.fused=false", override]))
    torch.manual_seed(0)
    net = build_supernet(cfg, 10, 3, 3)
    with pytest.raises(ValueError, match=feature):
        StackedSuperNet([net, net])


def test_refuses_mismatched_members_and_inputs(cfg, members):
    other = to_typed(compose("search", ["supernet.C=6", f"supernet.layers={LAYERS}", "dataset=digits",
                                        "supernet.fused=false"]))
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="members differ"):
        StackedSuperNet([members[0], build_supernet(other, 10, 3, LAYERS).double()])
    stacked = StackedSuperNet(members)
    with pytest.raises(ValueError, match="expected"):
        stacked(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.float64))


@pytest.mark.parametrize("simplex", ["renorm", "project"])
def test_the_stacked_attack_is_each_members_own_attack(simplex):
    """SDARTS-ADV's attack on stacked weights equals the solo attack member by member, including a member whose
    attack lowers its loss (it keeps its clean weights) and members with their own radius."""
    from types import SimpleNamespace

    from nasrun.methods.perturbations import back_on_simplex, pgd_attack, uniform_noise
    from nasrun.methods.stacking import stacked_pgd

    g = torch.Generator().manual_seed(3)
    clean = {k: torch.softmax(torch.randn(S, 5, 4, dtype=torch.float64, generator=g), -1) for k in ("normal", "reduce")}
    coef = {k: torch.randn(S, 5, 4, dtype=torch.float64, generator=g) for k in clean}
    eps, steps = [0.3, 0.2, 0.5], 4

    def loss_of_member(m: int, mix: dict) -> torch.Tensor:
        if m == 1:  # its ascent leads back towards the clean weights: the attack cannot raise this loss
            return -sum(((mix[k] - clean[k][m]) ** 2).sum() for k in mix)
        return sum((coef[k][m] * mix[k] ** (m + 1)).sum() for k in mix)

    class Member(torch.nn.Module):
        def __init__(self, m: int) -> None:
            super().__init__()
            self.m = m

        def mixing_weights(self) -> dict:
            return {k: v[self.m] for k, v in clean.items()}

    solo, starts = [], []
    for m in range(S):
        torch.manual_seed(m)
        objective = lambda model, x, y, mix: SimpleNamespace(total=loss_of_member(model.m, mix))  # noqa: E731
        solo.append(pgd_attack(Member(m), None, None, eps[m], steps, None, True, simplex, objective))
        torch.manual_seed(m)  # the same draws as the solo attack's random start
        starts.append({k: uniform_noise(v[m], eps[m]) for k, v in clean.items()})
    radius = torch.tensor(eps, dtype=torch.float64).view(-1, 1, 1)
    start = {k: back_on_simplex(v + torch.stack([s[k] for s in starts]), v, radius, simplex) for k, v in clean.items()}
    stacked = stacked_pgd(lambda mix: torch.stack([loss_of_member(m, {k: v[m] for k, v in mix.items()})
                                                   for m in range(S)]),
                          clean, start, radius, 2 * radius / steps, steps, simplex)
    assert [kept for _, kept in solo] == [True, False, True]
    for m, (mix, _) in enumerate(solo):
        for k in clean:
            torch.testing.assert_close(stacked[k][m], mix[k], rtol=0, atol=1e-14)
    assert not torch.equal(stacked["normal"][0], clean["normal"][0])
    assert torch.equal(stacked["normal"][1], clean["normal"][1])
