"""The optional TensorBoard writer: scalars by kind (accuracies in percent, 1-based steps), the cell and alpha
images, resumed runs appending, drawing failures as warnings, and the one-line message without the package."""

from __future__ import annotations

import logging
import math
import sys

import numpy as np
import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("matplotlib")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from nasrun.errors import ConfigError  # noqa: E402
from nasrun.genotype.genotype import PUBLISHED  # noqa: E402
from nasrun.report.tensorboard import FOLDER, TensorBoardWriter, scalar_tag, scalars  # noqa: E402

DARTS_V2 = PUBLISHED["DARTS_V2"]
OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5"]


def search_row(epoch: int) -> dict:
    """A search metrics.jsonl row with the keys of a real one (darts_2nd, eigenvalue and NB201 lookups on)."""
    return {"epoch": epoch, "lr": 0.025 - 0.001 * epoch, "arch_active": True, "train_loss": 1.5 - 0.1 * epoch,
            "train_acc": 0.125 + 0.1 * epoch, "arch_val_loss": 1.52, "arch_val_acc": 0.25, "images": 96,
            "g1_norm": 0.154, "second_norm": 0.142, "cosine": -0.126, "val_loss": 1.40, "val_acc": 0.229 + epoch / 10,
            "alpha_entropy_normal": 1.386, "alpha_entropy_reduce": 1.385, "skip_normal": 2 + epoch, "skip_reduce": 2,
            "param_free_normal": 2, "param_free_reduce": 4, "seconds": 0.28, "images_per_s": 337.2,
            "eigenvalue": np.float32(0.5), "bench_cifar10_test_acc": 91.5, "bench_cifar100_test_acc": None,
            "test_loss": float("nan")}


def alphas(epochs: int = 2, edges: int = 14) -> dict:
    rng = np.random.default_rng(0)
    w = rng.random((epochs, edges, len(OPS))).astype(np.float32)
    w /= w.sum(-1, keepdims=True)
    return {"normal": w, "reduce": w[:, ::-1].copy(), "ops": np.array(OPS)}


def load(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / FOLDER), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


EXPECTED_TAGS = {
    "other/lr", "loss/train_loss", "accuracy/train_acc", "loss/arch_val_loss", "accuracy/arch_val_acc",
    "other/images", "other/g1_norm", "other/second_norm", "other/cosine", "loss/val_loss", "accuracy/val_acc",
    "architecture/alpha_entropy_normal", "architecture/alpha_entropy_reduce", "architecture/skip_normal",
    "architecture/skip_reduce", "architecture/param_free_normal", "architecture/param_free_reduce", "time/seconds",
    "time/images_per_s", "architecture/eigenvalue", "benchmark/bench_cifar10_test_acc",
}


def test_scalars_images_and_steps(tmp_path):
    history = alphas()
    writer = TensorBoardWriter(tmp_path, "search")
    for epoch in range(2):
        writer.epoch(epoch, search_row(epoch), genotype=DARTS_V2,
                     alphas={k: (v if k == "ops" else v[:epoch + 1]) for k, v in history.items()})
    writer.close()
    writer.close()  # idempotent

    acc = load(tmp_path)
    tags = acc.Tags()
    # epoch, the bool, None and NaN are not scalars
    assert set(tags["scalars"]) == EXPECTED_TAGS
    assert set(tags["images"]) == {"cells", "alphas"}
    for tag in EXPECTED_TAGS:
        assert [e.step for e in acc.Scalars(tag)] == [1, 2], tag
    for epoch, (train, val) in enumerate(zip(acc.Scalars("accuracy/train_acc"), acc.Scalars("accuracy/val_acc"))):
        row = search_row(epoch)
        assert train.value == pytest.approx(100 * row["train_acc"], rel=1e-6)
        assert val.value == pytest.approx(100 * row["val_acc"], rel=1e-6)
    assert [e.value for e in acc.Scalars("benchmark/bench_cifar10_test_acc")] == pytest.approx([91.5, 91.5])
    assert [e.value for e in acc.Scalars("loss/train_loss")] == pytest.approx([1.5, 1.4], rel=1e-6)
    assert [e.value for e in acc.Scalars("architecture/skip_normal")] == [2.0, 3.0]
    assert [e.value for e in acc.Scalars("architecture/eigenvalue")] == pytest.approx([0.5, 0.5])
    assert [e.value for e in acc.Scalars("time/images_per_s")] == pytest.approx([337.2, 337.2], rel=1e-6)
    for tag in ("cells", "alphas"):
        images = acc.Images(tag)
        assert [e.step for e in images] == [1, 2]
        for image in images:
            assert image.width > 50 and image.height > 50
            assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


def test_retrain_row_and_scalars_only(tmp_path):
    row = {"epoch": 4, "lr": 0.02, "drop_path_prob": 0.1, "train_loss": 0.9, "train_acc": 0.7, "test_loss": 1.0,
           "test_acc": 0.65, "test_acc_top5": 0.95, "seconds": 12.0, "images_per_s": 4000.0}
    with TensorBoardWriter(tmp_path, "retrain") as writer:
        writer.epoch(4, row)
    acc = load(tmp_path)
    assert acc.Tags()["images"] == []
    events = {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}
    assert all([e.step for e in ev] == [5] for ev in events.values())  # epoch 4 (0-based) is step 5
    assert {tag: ev[0].value for tag, ev in events.items()} == pytest.approx({
        "other/lr": 0.02, "other/drop_path_prob": 0.1, "loss/train_loss": 0.9, "accuracy/train_acc": 70.0,
        "loss/test_loss": 1.0, "accuracy/test_acc": 65.0, "accuracy/test_acc_top5": 95.0, "time/seconds": 12.0,
        "time/images_per_s": 4000.0,
    }, rel=1e-6)
    assert any(p.name.endswith(".retrain") for p in (tmp_path / FOLDER).iterdir())


def test_resume_appends(tmp_path):
    with TensorBoardWriter(tmp_path, "search") as first:
        first.epoch(0, search_row(0))
    with TensorBoardWriter(tmp_path, "search") as resumed:
        resumed.epoch(1, search_row(1))
    assert len(list((tmp_path / FOLDER).glob("events.out.tfevents.*"))) == 2
    assert [e.step for e in load(tmp_path).Scalars("accuracy/val_acc")] == [1, 2]


def test_drawing_failure_is_a_warning(tmp_path, caplog):
    bad = {"ops": np.array(OPS)}  # no alpha kinds: plot_alphas refuses it
    with caplog.at_level(logging.DEBUG, logger="nasrun.report.tensorboard"), TensorBoardWriter(tmp_path, "search") as w:
        w.epoch(0, search_row(0), genotype=DARTS_V2, alphas=bad)
        w.epoch(1, search_row(1), genotype=DARTS_V2, alphas=bad)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "alphas" in warnings[0].getMessage()  # once, then debug only
    acc = load(tmp_path)
    assert acc.Tags()["images"] == ["cells"]
    assert [e.step for e in acc.Scalars("accuracy/val_acc")] == [1, 2]


def test_scalar_tags_and_filtering():
    assert scalar_tag("bench_cifar10_valid_acc") == ("benchmark/bench_cifar10_valid_acc", 1.0)
    assert scalar_tag("val_acc") == ("accuracy/val_acc", 100.0)
    assert scalar_tag("arch_val_loss") == ("loss/arch_val_loss", 1.0)
    assert scalar_tag("eigenvalue") == ("architecture/eigenvalue", 1.0)
    assert scalar_tag("stage_epoch") == ("other/stage_epoch", 1.0)
    got = scalars({"epoch": 3, "flag": True, "none": None, "nan": math.nan, "inf": math.inf, "name": "x",
                   "n": np.int64(3), "val_acc": 0.5})
    assert got == {"other/n": 3.0, "accuracy/val_acc": 50.0}


def test_missing_package_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError) as info:
        TensorBoardWriter(tmp_path, "search")
    message = str(info.value)
    assert "\n" not in message and "pip install 'nasrun[tensorboard]'" in message
    assert not (tmp_path / FOLDER).exists()


def test_logger_tensorboard_writes_every_epoch_of_a_search(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import TINY_SEARCH
    from nasrun.config.compose import compose, to_typed
    from nasrun.search.loop import run_search

    run_search(to_typed(compose("search", [*TINY_SEARCH, "logger=tensorboard"])), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("accuracy/val_acc")] == [1, 2]
    assert {"cells", "alphas"} <= set(events.Tags()["images"])
