"""Search supernet: shapes, alpha registration, the skipped `none` op and its exact gradient."""

import pytest
import torch

from nasrun.spaces import DARTS_OPS, Zero
from nasrun.supernet import MixedOp, SearchCell, SuperNet, num_edges


def tiny(in_channels=1, nodes=4, layers=3, C=2, ops=DARTS_OPS, dtype=torch.float32):
    torch.manual_seed(0)
    net = SuperNet(C=C, num_classes=3, layers=layers, ops=ops, nodes=nodes, in_channels=in_channels)
    return net.to(dtype)


@pytest.mark.parametrize("in_channels,size", [(1, 8), (3, 32)])
def test_output_shape(in_channels, size):
    net = tiny(in_channels=in_channels, layers=3 if size == 8 else 4)
    out = net(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 3)


@pytest.mark.parametrize("nodes", [2, 3, 5])
def test_other_node_counts(nodes):
    net = tiny(nodes=nodes)
    assert net.num_edges == num_edges(nodes) == sum(range(2, 2 + nodes))
    assert net.alphas_normal.shape == (net.num_edges, len(DARTS_OPS))
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    g = net.genotype()
    assert g.nodes == nodes and len(g.normal) == 2 * nodes


def test_edge_count_and_order():
    cell = SearchCell(4, 6, 6, 2, reduction=True, reduction_prev=False, ops=DARTS_OPS)
    assert len(cell.edges) == 14
    # sources per edge follow node 0: 0,1 ; node 1: 0,1,2 ; ...; stride 2 only from the inputs
    sources = [j for i in range(4) for j in range(2 + i)]
    assert [e.stride for e in cell.edges] == [2 if j < 2 else 1 for j in sources]


def test_alphas_are_registered_parameters():
    net = tiny()
    names = dict(net.named_parameters())
    assert names["alphas_normal"] is net.alphas_normal
    assert names["alphas_reduce"] is net.alphas_reduce
    sd = net.state_dict()
    assert "alphas_normal" in sd and "alphas_reduce" in sd
    arch = net.arch_parameters()
    assert arch[0] is net.alphas_normal and arch[1] is net.alphas_reduce
    weights = net.weight_parameters()
    assert all(w is not a for w in weights for a in arch)
    assert len(weights) + 2 == len(list(net.parameters()))
    assert net.weight_parameters() == weights  # stable order
    assert net.alphas_normal.shape == (14, 8)
    assert net.alphas_normal.abs().max() < 1e-2  # 1e-3 * N(0, 1)


def test_seeded_alpha_init_is_reproducible():
    a, b = tiny(), tiny()
    assert torch.equal(a.alphas_normal, b.alphas_normal)
    assert torch.equal(a.alphas_reduce, b.alphas_reduce)


def test_search_bn_is_not_affine_except_stem():
    net = tiny()
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d) and not name.startswith("stem"):
            assert not m.affine, name


def test_pooling_followed_by_bn():
    mo = MixedOp(4, 1, DARTS_OPS)
    for name, op in zip(DARTS_OPS, mo.ops):
        if "pool" in name:
            assert isinstance(op[1], torch.nn.BatchNorm2d) and not op[1].affine


def test_none_op_is_never_run():
    net = tiny()
    fired = []
    for m in net.modules():
        if isinstance(m, Zero):
            m.register_forward_hook(lambda *a: fired.append(1))
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    assert fired == []
    assert net.alphas_normal.grad[:, 0].abs().sum() > 0


def test_mixed_op_none_alpha_gradient_is_analytic():
    torch.manual_seed(1)
    mo = MixedOp(2, 1, DARTS_OPS).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    g = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    alpha = torch.randn(len(DARTS_OPS), dtype=torch.float64, requires_grad=True)
    w = torch.softmax(alpha, -1)
    (mo(x, w) * g).sum().backward()
    with torch.no_grad():
        v = torch.stack([(op(x) * g).sum() for op in mo.ops])  # v_none = 0
        w = w.detach()
        expected = w * (v - (w * v).sum())
    assert torch.allclose(alpha.grad, expected, rtol=1e-10, atol=1e-12)
    assert alpha.grad[0] != 0


def test_none_alpha_gradient_matches_finite_differences():
    net = tiny(dtype=torch.float64)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 2])
    loss_fn = torch.nn.functional.cross_entropy
    net.zero_grad()
    loss_fn(net(x), y).backward()
    for alpha, e in ((net.alphas_normal, 3), (net.alphas_reduce, 0)):
        analytic = alpha.grad[e, 0].item()
        assert analytic != 0
        h = 1e-6
        with torch.no_grad():
            alpha[e, 0] += h
            up = loss_fn(net(x), y).item()
            alpha[e, 0] -= 2 * h
            down = loss_fn(net(x), y).item()
            alpha[e, 0] += h
        numeric = (up - down) / (2 * h)
        assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-10)


def test_explicit_mix_equals_softmaxed_alphas():
    net = tiny()
    x = torch.randn(2, 1, 8, 8)
    net.eval()
    a = net(x)
    b = net(x, mix=net.mixing_weights())
    assert torch.equal(a, b)
    mw = net.mixing_weights()
    assert torch.allclose(mw["normal"].sum(-1), torch.ones(14))
    with pytest.raises(ValueError, match="shape"):
        net(x, mix={"normal": mw["normal"][:3], "reduce": mw["reduce"]})


def test_mix_override_changes_output():
    net = tiny().eval()
    x = torch.randn(2, 1, 8, 8)
    mix = net.mixing_weights()
    onehot = {k: torch.nn.functional.one_hot(v.argmax(-1), v.shape[1]).float() for k, v in mix.items()}
    assert not torch.allclose(net(x), net(x, mix=onehot))


def test_float64_and_genotype():
    net = tiny(dtype=torch.float64)
    out = net(torch.randn(2, 1, 8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64
    g = net.genotype()
    assert g.ops == DARTS_OPS and g.space == "darts"
    assert all(op != "none" for op, _ in g.normal + g.reduce)


def test_space_without_none():
    ops = DARTS_OPS[1:]
    net = tiny(ops=ops)
    assert net.alphas_normal.shape == (14, 7)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert net.genotype().ops == ops
