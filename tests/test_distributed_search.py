"""Search under torchrun (CPU, gloo, 2 processes): the same search as one process with the global batch.

Every check starts the real entry point (``python -m torch.distributed.run --standalone
--nproc_per_node=2 -m nasrun search ...``) on a tiny digits supernet and compares it with one process
running the same config. ``search.sync_bn=true`` makes every BatchNorm normalise over the global batch,
so a 2-process step is the 1-process step up to the order of float additions (a sum over ranks instead of
within one batch). Tolerances: every weight tensor within 1e-4 of its largest magnitude (measured: about
1e-6); alphas and betas within 2e-5 absolute (measured: 3e-6; Adam moves an alpha whose gradient is at the
rounding level by a full step of search.arch_lr=3e-4 either way, so alphas are compared against the step,
not their own tiny magnitude); losses and the direct gradient's norm within 1e-5 relative (measured:
about 1e-7), the norm of the second-order term and its cosine with the first within 1e-4 (measured:
1.4e-5; a finite difference divides rounding by 2 epsilon); accuracies and genotypes exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY_SEARCH
from nasrun.config.compose import compose, to_typed
from nasrun.parallel.distributed import FAIL_HOOK
from nasrun.search.loop import run_search
from test_distributed import LOSS_RTOL, assert_same_weights, metrics, nasrun_as_rank, torchrun

DDP_SEARCH = [*TINY_SEARCH, "search.sync_bn=true", "threads=1", "device=cpu", "seed=0"]
# Trajectories are compared over one epoch (22 steps). Later, a ReLU or max-pool input within ~1e-5 of its kink is
# crossed one way in one run and the other way in the other (rounding differs with the order of the ranks' sums):
# measured, one max-pool near-tie at epoch 2, step 5 changed the alpha gradient by 0.9%, Adam turned that into ~1%
# of a full arch_lr step on every alpha, and the runs parted (5.8e-2 after two epochs; two one-process runs whose
# weights differ by 1 ulp part the same way). After one epoch the runs agree to 1.8e-5.
ONE_EPOCH = [*DDP_SEARCH, "search.epochs=1"]
# one short epoch of the estimators with extra terms, on PC-DARTS' partial channels and edge betas
SHORT = ["search.epochs=1", "dataset.subset=0.3", "supernet.partial_channels=2", "supernet.edge_norm=true"]
FD_RTOL = 1e-4  # a central difference divides float32 rounding by 2 epsilon: its term's noise (measured 1.4e-5)
ARCH_ATOL = 2e-5


def checkpoint_model(run: Path) -> tuple[dict, dict]:
    """The supernet's weights and its architecture parameters (alphas, betas), from the last checkpoint."""
    model = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    arch = {k: v for k, v in model.items() if k.startswith(("alphas", "betas"))}
    return {k: v for k, v in model.items() if k not in arch}, arch


def assert_same_arch(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert float((a[key].double() - b[key].double()).abs().max()) <= ARCH_ATOL, key


def assert_same_search(one: Path, two: Path) -> None:
    """Same genotypes, weights and alphas (checkpoint), metrics (accuracies exactly, losses to LOSS_RTOL)."""
    assert json.loads((one / "genotype.json").read_text()) == json.loads((two / "genotype.json").read_text())
    assert (one / "genotypes.jsonl").read_text() == (two / "genotypes.jsonl").read_text()
    (weights_one, arch_one), (weights_two, arch_two) = checkpoint_model(one), checkpoint_model(two)
    assert_same_weights(weights_one, weights_two)
    assert_same_arch(arch_one, arch_two)
    a, b = metrics(one), metrics(two)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for x, y in zip(a, b):
        for key in ("lr", "train_acc", "val_acc", "arch_val_acc", "skip_normal", "skip_reduce"):
            assert x[key] == y[key], key
        for key in ("train_loss", "val_loss", "arch_val_loss", "g1_norm"):
            assert x[key] == pytest.approx(y[key], rel=LOSS_RTOL), key
        for key in ("second_norm", "cosine"):
            if key in x:
                assert x[key] == pytest.approx(y[key], rel=FD_RTOL), key


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddp_search") / "one"
    run_search(to_typed(compose("search", ONE_EPOCH)), run)
    return run


def test_two_processes_search_as_one(one_process: Path, tmp_path: Path):
    run = tmp_path / "two"
    proc = torchrun("search", *ONE_EPOCH, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("search run folder:") == 1  # rank 0 alone prints the outcome
    assert_same_search(one_process, run)
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and result["world_size"] == 2
    final = json.loads((one_process / "result.json").read_text())["final"]
    assert result["final"] == {**final, "val_loss": pytest.approx(final["val_loss"], rel=LOSS_RTOL)}
    assert [p.name for p in tmp_path.iterdir()] == ["two"]  # rank 1 made no run folder of its own


@pytest.mark.slow
@pytest.mark.parametrize("method, fused", [("darts_2nd", "true"), ("amended", "false")])
def test_estimators_with_extra_terms_search_as_one(method: str, fused: str, tmp_path: Path):
    """The virtual step, the finite differences and their radii all use the global batch's gradients; global
    BatchNorm works in the fused supernet's edge groups and in the plain supernet's swapped modules."""
    overrides = [*DDP_SEARCH, f"method={method}", *SHORT, f"supernet.fused={fused}"]
    one = tmp_path / "one"
    run_search(to_typed(compose("search", overrides)), one)
    proc = torchrun("search", *overrides, f"hydra.run.dir={tmp_path / 'two'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert metrics(one)[0]["second_norm"] > 0
    assert_same_search(one, tmp_path / "two")


@pytest.mark.slow
def test_random_perturbation_search_as_one(tmp_path: Path):
    """SDARTS-RS: every rank trains under rank 0's draw of the perturbed mixing weights, one process's draw;
    the alphas, which that weight step leaves without gradient, are kept out of DDP."""
    overrides = [*DDP_SEARCH, "method=sdarts_rs", "search.arch_warmup_epochs=0", "dataset.subset=0.3"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_search(to_typed(compose("search", overrides)), one)
    proc = torchrun("search", *overrides, f"hydra.run.dir={two}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_search(one, two)


@pytest.mark.slow
def test_progressive_stages_search_as_one(tmp_path: Path):
    """P-DARTS' stages: each stage's new supernet is wrapped again (DDP broadcasts rank 0's initial weights,
    which are one process's: no skip dropout here, whose masks each rank draws for its own slice).

    The stage records and genotypes are one process's, and so is the first stage to the usual tolerances.
    Later stages are compared loosely: in their deeper supernets Adam takes full steps of either sign on
    alpha gradients at the rounding level, so ||g1|| drifts within the epoch: by 1.4% here, by 7% between two
    one-process runs that differ only in their thread count (summation order). P-DARTS' own arch_lr 6e-4
    does that from the first stage, hence DARTS' 3e-4 here."""
    overrides = [*DDP_SEARCH, "method=pdarts", "schedule.stage_keep=[3,2,1]", "schedule.stage_add_layers=[0,1,2]",
                 "supernet.skip_dropout=[0.0]", "search.epochs=1", "search.arch_warmup_epochs=0", "dataset.subset=0.3",
                 "search.arch_lr=3e-4"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_search(to_typed(compose("search", overrides)), one)
    proc = torchrun("search", *overrides, f"hydra.run.dir={two}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(json.loads((one / "stages.json").read_text())) == 3
    assert (one / "stages.json").read_text() == (two / "stages.json").read_text()
    assert (one / "genotypes.jsonl").read_text() == (two / "genotypes.jsonl").read_text()
    a, b = metrics(one), metrics(two)
    assert [r["stage"] for r in a] == [r["stage"] for r in b] == [0, 1, 2]
    for key in ("train_loss", "val_loss", "arch_val_loss", "g1_norm"):
        assert a[0][key] == pytest.approx(b[0][key], rel=LOSS_RTOL), key
        for x, y in zip(a[1:], b[1:]):
            assert x[key] == pytest.approx(y[key], rel=0.2), key
    assert json.loads((two / "result.json").read_text())["world_size"] == 2


def test_a_failing_rank_ends_the_search_and_a_single_process_resumes_it(one_process: Path, tmp_path: Path):
    """Rank 1 raises in epoch 2: the failure is recorded with its rank, and the 2-process checkpoint of epoch 1
    is one process's epoch 1; one process resumes it and completes the search, keeping epoch 1's row.

    The resumed epoch 2 is not compared with an uninterrupted run: see ONE_EPOCH for why trajectories part.
    """
    run = tmp_path / "failing"
    proc = torchrun("search", *DDP_SEARCH, f"hydra.run.dir={run}", cwd=tmp_path,
                    no_python=shutil.which("nasrun") is not None, **{FAIL_HOOK: "1:1"})
    assert proc.returncode != 0
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "failed" and result["failed_rank"] == 1 and result["world_size"] == 2
    assert result["reason"].startswith("rank 1: RuntimeError: NASRUN_TEST_FAIL_RANK")
    assert result["last_epoch"] == 0
    assert "rank 0 stopped: rank 1 failed" in proc.stderr
    (weights_one, arch_one), (weights_two, arch_two) = checkpoint_model(one_process), checkpoint_model(run)
    assert_same_weights(weights_one, weights_two)
    assert_same_arch(arch_one, arch_two)
    first_row = metrics(run)[0]
    assert first_row["train_acc"] == metrics(one_process)[0]["train_acc"]
    assert first_row["train_loss"] == pytest.approx(metrics(one_process)[0]["train_loss"], rel=LOSS_RTOL)

    resumed = run_search(to_typed(compose("search", DDP_SEARCH)), run)
    assert resumed["status"] == "completed" and resumed["world_size"] == 1
    assert "resuming" in (run / "search.log").read_text()
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0] == first_row
    assert rows[1]["lr"] < rows[0]["lr"] and (run / "genotype.json").is_file()


@pytest.mark.parametrize("overrides, axis", [(["method=sdarts_adv"], "perturbation=adversarial"),
                                             (["method=nasp"], "estimator=proximal"),
                                             (["method=zarts"], "estimator=")])
def test_unsupported_methods_are_refused_under_torchrun(overrides: list[str], axis: str, tmp_path: Path):
    proc = nasrun_as_rank("search", *DDP_SEARCH, *overrides, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and axis in lines[0] and "under torchrun" in lines[0], lines


def test_exact_products_through_global_batch_norm_are_refused(tmp_path: Path):
    proc = nasrun_as_rank("search", *DDP_SEARCH, "method=amended", "estimator.hvp=exact", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "estimator.hvp=exact" in lines[0] and "search.sync_bn" in lines[0], lines


def test_the_search_batch_must_split_evenly(tmp_path: Path):
    proc = nasrun_as_rank("search", *DDP_SEARCH, "search.batch_size=33", cwd=tmp_path)
    assert proc.returncode == 2
    assert "search.batch_size=33" in proc.stderr and "multiple of 2" in proc.stderr
