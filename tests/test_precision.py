"""precision=bf16 and channels_last: what stays fp32 (BatchNorm, the loss, the estimators' second-order
terms), end-to-end runs on the CPU that record both keys, and the refused value. precision=fp64: every
method preset and space searches in float64 (weights, alphas, buffers, optimiser states), repeats bit for
bit, follows the fp32 trajectory without its rounding, and its estimators meet exact math far more tightly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import TINY_OPS, TINY_RETRAIN, TINY_SEARCH, TINY_SYNTH
from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.methods import ArchBatch, ArchObjective, make_estimator
from nasrun.methods.estimators import SecondOrder, amended_product, central_difference, exact_mixed
from nasrun.methods.estimators import finite_difference_mixed
from nasrun.train.precision import Numerics, check_available, full_precision
from nasrun.train.retrain import run_retrain
from nasrun.search.loop import run_search
from nasrun.search.state import build_supernet
from nasrun.spaces.ops import NOISE, Noise
from nasrun.supernet import SuperNet

BF16 = Numerics("bf16")


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b)) ** 0.5
    return num / max(sum(float(y.pow(2).sum()) for y in b) ** 0.5, 1e-30)


@pytest.fixture
def net32() -> SuperNet:
    """The tiny supernet of conftest in float32 (autocast leaves float64 alone)."""
    torch.manual_seed(0)
    net = SuperNet(C=4, num_classes=3, layers=3, ops=TINY_OPS, nodes=2, in_channels=1)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.randn_like(a) * 0.5)
    return BF16.prepare(net)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)


def _direction(net: SuperNet) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.randn(w.shape, generator=g) for w in net.weight_parameters()]


def _restore(net: SuperNet, saved: list[torch.Tensor]) -> None:
    """Put the weights back where a finite difference left them perturbed."""
    with torch.no_grad():
        for w, s in zip(net.weight_parameters(), saved):
            w.copy_(s)


def test_plain_forward_under_the_autocast_is_bf16(net32, batch):
    x, y = batch
    with BF16.autocast("cpu"):
        assert net32(x).dtype == torch.bfloat16
    fp32 = ArchObjective()(net32, x, y).loss.detach()
    bf16 = ArchObjective(BF16)(net32, x, y).loss.detach()
    assert bf16.dtype == torch.float32  # the loss of fp32 logits
    assert abs(float(bf16 - fp32)) > 1e-5 * abs(float(fp32))  # ... of a forward that really was bf16


def test_batchnorm_and_loss_are_fp32_under_bf16(net32, batch):
    x, y = batch
    seen = []
    bn = next(m for m in net32.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    with BF16.autocast("cpu"):
        net32(x)
    assert seen and all(pair == (torch.float32, torch.float32) for pair in seen)
    assert ArchObjective(BF16)(net32, x, y).total.dtype == torch.float32


@pytest.mark.parametrize("hvp", ["finite_difference", "exact"])
def test_amended_product_is_fp32_under_bf16(net32, batch, hvp):
    x, y = batch
    v = _direction(net32)
    fp32 = amended_product(net32, v, x, y, hvp, 0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the loop's autocast, entered around the step
        inside = amended_product(net32, v, x, y, hvp, 0.01)
    own = amended_product(net32, v, x, y, hvp, 0.01, ArchObjective(BF16))  # the run's bf16 objective
    assert _rel(inside, fp32) < 1e-6 and _rel(own, fp32) < 1e-6


def test_second_order_mixed_terms_are_fp32_under_bf16(net32, batch):
    x, y = batch
    weights, v = net32.weight_parameters(), _direction(net32)
    center = [w.detach().clone() for w in weights]
    exact = exact_mixed(net32, weights, v, x, y)
    fd = finite_difference_mixed(net32, weights, center, v, x, y, 0.01)
    _restore(net32, center)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        exact_bf16 = exact_mixed(net32, weights, v, x, y, ArchObjective(BF16))
        fd_bf16 = finite_difference_mixed(net32, weights, center, v, x, y, 0.01, ArchObjective(BF16))
        _restore(net32, center)
        # the same difference without full_precision: rounding noise, which is what the test guards against
        rounded = central_difference.__wrapped__(net32, weights, center, v, x, y, 0.01, net32.arch_parameters())
    assert _rel(fd_bf16, fd) < 1e-6 and _rel(exact_bf16, exact) < 1e-6
    assert _rel(rounded, fd) > 1e-2


def test_second_order_virtual_step_loss_is_fp32(net32, batch):
    x, y = batch
    fp32 = SecondOrder(objective=ArchObjective()).loss(net32, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = SecondOrder(objective=ArchObjective(BF16)).loss(net32, x, y)
    assert bf16.item() == pytest.approx(fp32.item(), rel=1e-6)
    with full_precision():  # the run's bf16 objective is fp32 inside
        assert ArchObjective(BF16)(net32, x, y).loss.item() == pytest.approx(fp32.item(), rel=1e-6)


def test_bf16_channels_last_search_and_retrain_on_cpu(tmp_path: Path):
    extra = ["precision=bf16", "channels_last=true"]
    search = run_search(to_typed(compose("search", [*TINY_SYNTH, "search.epochs=1", "method=amended", *extra])),
                        tmp_path / "search")
    assert search["status"] == "completed"
    retrain = run_retrain(to_typed(compose("retrain", [f"genotype={tmp_path / 'search'}", *TINY_RETRAIN, *extra])),
                          tmp_path / "retrain")
    assert retrain["status"] == "completed" and 0.0 <= retrain["test_acc"] <= 1.0
    for name in ("search", "retrain"):
        saved = json.loads((tmp_path / name / "result.json").read_text())
        assert saved["precision"] == "bf16" and saved["channels_last"] is True


def test_defaults_are_fp32_and_contiguous():
    cfg = to_typed(compose("search", TINY_SYNTH))
    assert cfg.precision == "fp32" and cfg.channels_last is False
    assert Numerics.of(cfg).record() == {"precision": "fp32", "channels_last": False}


def test_bad_precision_is_one_config_error_line():
    with pytest.raises(ConfigError) as info:
        to_typed(compose("search", [*TINY_SYNTH, "precision=fp16"]))
    message = str(info.value)
    assert "precision" in message and "fp16" in message and "fp32, bf16" in message and "\n" not in message


# ------------------------------------------------------------------------------------------------ fp64

FP64 = Numerics("fp64")
#: TINY_SEARCH on 10 digits per class (two steps per epoch), in float64.
TINY64 = [*TINY_SEARCH, "dataset.subset=10", "precision=fp64"]
#: Each preset's parts exercised within a second or so (the overrides of scripts/fingerprint_presets.py).
PRESET_EXTRA = {
    "zarts": ["search.arch_warmup_epochs=0", "estimator.update_every=1", "estimator.inner_steps=2",
              "estimator.samples=2"],
    "pcdarts": ["search.arch_warmup_epochs=1", "supernet.partial_channels=2"],
    "pdarts": ["search.epochs=1", "search.arch_warmup_epochs=0", "schedule.stage_add_layers=[0,1,2]",
               "schedule.stage_keep=[3,2,1]"],
}
#: The spaces keep their own ops and nodes (TINY_SEARCH's are the DARTS space's).
SPACE_BASE = [o for o in TINY64 if not o.startswith(("space.ops=", "space.nodes="))]


def _float_dtypes(tree, skip: tuple[str, ...] = ()) -> set[torch.dtype]:
    """The dtypes of the floating tensors in a checkpoint's nested dicts and lists (keys in ``skip`` left out)."""
    if isinstance(tree, torch.Tensor):
        return {tree.dtype} if tree.is_floating_point() else set()
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return set().union(*(_float_dtypes(v, skip) for k, v in items if k not in skip))


def _search64(out: Path, overrides: list[str]) -> dict:
    """An fp64 search; checks what it saved is float64 and returns its checkpoint."""
    result = run_search(to_typed(compose("search", overrides)), out)
    assert result["status"] == "completed" and result["precision"] == "fp64"
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    model = ckpt["model"]
    assert any(k.endswith("alphas_normal") for k in model) and _float_dtypes(model) == {torch.float64}
    assert _float_dtypes(ckpt["weight_optimizer"]["state"]) == {torch.float64}  # SGD's momentum buffers
    # Adam's moments; its step is a count kept as a float32 scalar by torch, exact up to 2**24 and read as a
    # Python number for the bias correction
    assert _float_dtypes(ckpt["arch_optimizer"]["state"], skip=("step",)) <= {torch.float64}
    alphas = np.load(out / "alphas.npz")
    assert {alphas[k].dtype for k in alphas.files if k != "ops"} == {np.dtype(np.float64)}
    return ckpt


@pytest.mark.parametrize("preset, extra", [
    ("darts", []), ("darts", ["supernet.fused=false"]), ("darts_2nd", []), ("amended", []),
    ("amended", ["estimator.hvp=exact"]), ("pcdarts", []), ("sdarts_rs", []), ("sdarts_adv", []), ("nasp", []),
    ("zarts", []), ("pdarts", []),
])
def test_fp64_search_of_every_preset_is_float64(tmp_path: Path, preset: str, extra: list[str]):
    ckpt = _search64(tmp_path, [*TINY64, f"method={preset}", *PRESET_EXTRA.get(preset, []), *extra])
    if preset == "zarts":  # its rule moved the alphas (no optimiser state to check)
        assert ckpt["estimator"]["updates"] > 0
    else:
        assert ckpt["arch_optimizer"]["state"], "the architecture optimiser stepped"
    if preset == "pdarts":  # the last stage's supernet, built at the stage change, is float64 too
        assert ckpt["stage"] == 2


@pytest.mark.parametrize("space", ["nb201", "rdarts_s3", "rdarts_s4"])
@pytest.mark.parametrize("preset", ["darts", "amended"])
def test_fp64_search_on_other_spaces_is_float64(tmp_path: Path, space: str, preset: str):
    _search64(tmp_path, [*SPACE_BASE, f"space={space}", f"method={preset}"])


def _alphas(out: Path) -> dict[str, np.ndarray]:
    saved = np.load(out / "alphas.npz")
    return {k: saved[k] for k in saved.files if k != "ops"}


def test_fp64_runs_repeat_bit_for_bit_and_follow_the_fp32_trajectory(tmp_path: Path):
    """S4's noise op and SDARTS-RS' noise: the same draws in both precisions, cast (nothing else differs)."""
    base = [*SPACE_BASE, "space=rdarts_s4", "method=sdarts_rs"]
    runs = {name: tmp_path / name for name in ("a", "b", "fp32")}
    for name, out in runs.items():
        run_search(to_typed(compose("search", base + (["precision=fp32"] if name == "fp32" else []))), out)
    a, b, fp32 = (_alphas(out) for out in runs.values())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ckpt_a, ckpt_b = (torch.load(runs[n] / "checkpoint.pt", weights_only=True)["model"] for n in ("a", "b"))
    assert all(torch.equal(ckpt_a[k], ckpt_b[k]) for k in ckpt_a)
    rows = [[{k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_s")}
             for line in (runs[n] / "metrics.jsonl").read_text().splitlines()] for n in ("a", "b")]
    assert rows[0] == rows[1]
    # fp32 rounds (mixing weights ~0.25 differ by ~3e-8 after two epochs, measured), fp64 does not repeat it
    gap = max(float(np.abs(a[k] - fp32[k]).max()) for k in a)
    assert 0.0 < gap < 1e-6


def test_fp64_inputs_autocast_and_noise():
    x = torch.randn(2, 1, 4, 4)
    assert FP64.inputs(x).dtype == torch.float64 and torch.equal(FP64.inputs(x), x.double())
    assert Numerics().inputs(x) is x
    with FP64.autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    NOISE.seed(7)
    fp32 = Noise(1)(x)
    after32 = NOISE.state_dict()["generator"]
    NOISE.seed(7)
    fp64 = Noise(1)(x.double())
    # the fp32 draws as float64 values, and the generator consumed exactly as much
    assert fp64.dtype == torch.float64 and torch.equal(fp64, fp32.double())
    assert torch.equal(NOISE.state_dict()["generator"], after32)


def test_fp64_fused_and_plain_supernets_agree_to_rounding():
    """The fused (batched) supernet in fp64 meets the plain one to ~1e-15 (fp32: ~1e-6), measured."""
    def loss_and_grads(precision: str, fused: bool):
        cfg = to_typed(compose("search", [*TINY_SEARCH, f"precision={precision}",
                                          f"supernet.fused={str(fused).lower()}"]))
        torch.manual_seed(0)
        net = Numerics.of(cfg).prepare(build_supernet(cfg, 3, 1, 3))
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
        value = ArchObjective(Numerics.of(cfg))(net, x, y)
        return [value.total.detach(), *torch.autograd.grad(value.total, net.arch_parameters())]

    gaps = {}
    for precision in ("fp32", "fp64"):
        fused, plain = loss_and_grads(precision, True), loss_and_grads(precision, False)
        assert fused[0].dtype == (torch.float64 if precision == "fp64" else torch.float32)
        gaps[precision] = _rel([t.double() for t in fused[1:]], [t.double() for t in plain[1:]])
    assert gaps["fp64"] < 1e-12 and gaps["fp32"] > 1e-8  # the fp32 gap is visible: the test can tell them apart


# ------------------------------------------------ the estimators in fp64 against exact math (float64 reference)

XI, MU, WD = 0.05, 0.9, 3e-4


def _estimator_case(precision: str, method: str, extra: list[str]):
    """The run's own pieces: the supernet built and prepared for ``precision``, the estimator over the run's
    objective, fp32 batches as the loaders give, and an SGD with momentum after two steps."""
    cfg = to_typed(compose("search", [*TINY_SEARCH, f"method={method}", f"precision={precision}",
                                      "supernet.fused=false", *extra]))
    numerics = Numerics.of(cfg)
    torch.manual_seed(0)
    net = numerics.prepare(build_supernet(cfg, 3, 1, 3))
    with torch.no_grad():  # alphas away from uniform so every term of the gradient is visible
        for a in net.arch_parameters():
            a.copy_(torch.randn(a.shape) * 0.5)
    g = torch.Generator().manual_seed(1)
    xt, xv = torch.randn(8, 1, 8, 8, generator=g), torch.randn(8, 1, 8, 8, generator=g)
    yt, yv = torch.randint(0, 3, (8,), generator=g), torch.randint(0, 3, (8,), generator=g)
    opt = torch.optim.SGD(net.weight_parameters(), lr=XI, momentum=MU, weight_decay=WD)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(net(numerics.inputs(xt)), yt).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return net, make_estimator(cfg.estimator, ArchObjective(numerics)), ArchBatch(xt, yt, xv, yv, opt, XI)


class _Exact:
    """The estimators' formulas written out with torch.autograd on a float64 copy of the supernet."""

    def __init__(self, net: SuperNet, opt: torch.optim.SGD) -> None:
        self.net = copy.deepcopy(net).double()
        names = {id(p): n for n, p in net.named_parameters()}
        self.w_names = [names[id(p)] for p in net.weight_parameters()]
        self.a_names = [names[id(p)] for p in net.arch_parameters()]
        self.w = [p.detach().double() for p in net.weight_parameters()]
        self.a = [p.detach().double() for p in net.arch_parameters()]
        self.momentum = [opt.state[p]["momentum_buffer"].double() for p in net.weight_parameters()]

    def loss(self, w, a, x, y) -> torch.Tensor:
        state = {**dict(zip(self.w_names, w)), **dict(zip(self.a_names, a)),
                 **{n: b.clone() for n, b in self.net.named_buffers()}}
        return F.cross_entropy(functional_call(self.net, state, (x.double(),)), y)

    def _leaves(self):
        return [t.clone().requires_grad_() for t in self.w], [t.clone().requires_grad_() for t in self.a]

    def second_order(self, b: ArchBatch) -> list[torch.Tensor]:
        """d/d alpha L_val(w - xi (mu m + g(alpha) + wd w), alpha): the total derivative through the virtual step."""
        w, a = self._leaves()
        g = torch.autograd.grad(self.loss(w, a, b.x_train, b.y_train), w, create_graph=True)
        w1 = [wi - XI * (MU * m + gi + WD * wi) for wi, gi, m in zip(w, g, self.momentum)]
        return list(torch.autograd.grad(self.loss(w1, a, b.x_val, b.y_val), a))

    def amended(self, b: ArchBatch, eta: float) -> list[torch.Tensor]:
        """g1 - eta B (H v), v = d L_val / d w, both products of the training loss at w by double backward."""
        w, a = self._leaves()
        grads = torch.autograd.grad(self.loss(w, a, b.x_val, b.y_val), a + w)
        g1, v = grads[: len(a)], grads[len(a):]
        w, a = self._leaves()
        g = torch.autograd.grad(self.loss(w, a, b.x_train, b.y_train), w, create_graph=True)
        hv = torch.autograd.grad(g, w, grad_outputs=v, retain_graph=True)
        z = torch.autograd.grad(g, a, grad_outputs=[h.detach() for h in hv])
        return [gi - eta * zi for gi, zi in zip(g1, z)]


# (method, overrides, fp64 bound, fp32 floor); measured gaps to exact math, fp64 / fp32:
#   darts_2nd exact 7e-16 / 6e-7, amended exact 0 / 7e-7,
#   darts_2nd radius 1e-6 1.8e-10 / 2.9e-2, amended radius 1e-6 1.8e-9 / 2.0e-1
# (a finite difference of radius 1e-6 is rounding noise in fp32 and exact to its truncation in fp64)
ESTIMATOR_CASES = [
    ("darts_2nd", ["estimator.hvp=exact"], 1e-13, 1e-8),
    ("amended", ["estimator.hvp=exact"], 1e-13, 1e-8),
    ("darts_2nd", ["estimator.fd_radius=1e-6"], 1e-8, 1e-3),
    ("amended", ["estimator.fd_radius=1e-6"], 1e-7, 1e-3),
]


@pytest.mark.parametrize("method, extra, fp64_bound, fp32_floor", ESTIMATOR_CASES)
def test_fp64_estimators_meet_exact_math_far_more_tightly(method, extra, fp64_bound, fp32_floor):
    gaps = {}
    for precision in ("fp32", "fp64"):
        net, estimator, batch = _estimator_case(precision, method, extra)
        exact = _Exact(net, batch.weight_optimizer)
        want = exact.second_order(batch) if method == "darts_2nd" else exact.amended(batch, estimator.eta)
        got = estimator(net, batch).grads
        assert {g.dtype for g in got} == {torch.float64 if precision == "fp64" else torch.float32}
        gaps[precision] = _rel([g.double() for g in got], want)
    assert gaps["fp64"] < fp64_bound and gaps["fp32"] > fp32_floor


def test_fp64_retrain_of_a_published_genotype_is_float64(tmp_path: Path):
    overrides = ["genotype=DARTS_V2", *TINY_RETRAIN, "dataset=digits", "dataset.subset=10",
                 "recipe.drop_path_prob=0.2", "precision=fp64"]
    result = run_retrain(to_typed(compose("retrain", overrides)), tmp_path)
    assert result["status"] == "completed" and result["precision"] == "fp64"
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert _float_dtypes(ckpt["model"]) == {torch.float64}
    assert _float_dtypes(ckpt["optimizer"]["state"]) == {torch.float64}


def test_fp64_on_the_cpu_is_allowed_quietly(caplog):
    check_available("fp64", torch.device("cpu"))
    assert not caplog.records


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp64_on_a_gpu_is_allowed_with_a_warning(caplog):
    check_available("fp64", torch.device("cuda"))
    assert any("precision=fp64" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
