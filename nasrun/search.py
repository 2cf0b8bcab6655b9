"""The search loop: the one implementation of the bilevel loop that every method composes.

Per step: an architecture step on a validation batch (the method's estimator, then Adam), then a
weight step on the training batch (SGD, gradient clipping). Per epoch: a metrics row, a genotype row,
the alpha history and an atomic checkpoint. ``run_search`` takes a typed config and an output folder,
so it runs the same from the CLI, from Python and from tests.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from nasrun.config import DatasetConf, NasrunConf, as_plain_dict
from nasrun.data import eval_batches, index_hash, load_dataset, make_stream, search_split
from nasrun.methods import ArchBatch, make_estimator, make_perturbation
from nasrun.runs import (
    CHECKPOINT,
    METRICS,
    add_file_log,
    append_jsonl,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    check_same_config,
    environment,
    load_checkpoint,
    read_jsonl,
    read_result,
    resolve_device,
    seed_everything,
    truncate_jsonl,
    write_result,
)
from nasrun.supernet import SuperNet, keep_strongest, refine_skips, skip_dropout_rate

log = logging.getLogger(__name__)

GENOTYPES = "genotypes.jsonl"
ALPHAS = "alphas.npz"
STAGES = "stages.json"

EpochHook = Callable[[int, dict], None]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


def alpha_entropy(weights: torch.Tensor) -> float:
    """Mean over edges of the entropy of the mixing weights (log K when uniform, 0 when one-hot)."""
    w = weights.detach().clamp_min(1e-12)
    return float(-(w * w.log()).sum(-1).mean())


def run_search(cfg: NasrunConf, out_dir: str | Path, on_epoch_end: Optional[EpochHook] = None) -> dict:
    """Search a genotype into ``out_dir``; resume from its checkpoint if there is one."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    add_file_log(out, "search.log")
    config = as_plain_dict(cfg)
    previous = read_result(out)
    if previous and previous.get("status") == "completed":
        check_same_config(out, previous.get("config", {}), config)
        log.info("%s already holds a completed search; nothing to do", out)
        return previous

    started = time.time()
    device = resolve_device(cfg.device)
    dataset_cfg = cfg.dataset or DatasetConf()
    try:
        return _search(cfg, dataset_cfg, config, out, device, started, on_epoch_end)
    except KeyboardInterrupt:
        write_result(out, "interrupted", reason="interrupted by the user; rerun the same command to resume",
                     config=config)
        raise
    except Exception as exc:
        write_result(out, "failed", reason=f"{type(exc).__name__}: {exc}", config=config,
                     wall_seconds=time.time() - started)
        raise


def _search(cfg, dataset_cfg, config, out, device, started, on_epoch_end) -> dict:
    seed_everything(cfg.seed)
    data = load_dataset(dataset_cfg)
    train_idx, val_idx = search_split(len(data.train), dataset_cfg.search_split, cfg.seed)
    s = cfg.search
    loader = dict(loader=dataset_cfg.loader, workers=dataset_cfg.workers, pin_memory=dataset_cfg.pin_memory)
    train_stream = make_stream(
        data.train, train_idx, s.batch_size, seed=cfg.seed * 1000 + 1, mean=data.mean, std=data.std,
        augment=dataset_cfg.train_augment, crop_padding=dataset_cfg.crop_padding, device=device, **loader,
    )
    val_stream = make_stream(
        data.train, val_idx, s.batch_size, seed=cfg.seed * 1000 + 2, mean=data.mean, std=data.std,
        augment=dataset_cfg.train_augment if dataset_cfg.augment_val else (),
        crop_padding=dataset_cfg.crop_padding, device=device, **loader,
    )

    # The schedule: one stage, or progressive stages (P-DARTS), each a fresh supernet and fresh
    # optimisers over search.epochs epochs; an epoch's number counts on across stages.
    plan = stage_plan(cfg)
    E = s.epochs
    total_epochs = E * len(plan)

    def build(stage: int, edge_ops):
        model = SuperNet(
            cfg.supernet.C, dataset_cfg.num_classes, plan[stage]["layers"], cfg.space.ops,
            nodes=cfg.supernet.nodes, in_channels=dataset_cfg.in_channels,
            stem_multiplier=cfg.supernet.stem_multiplier, partial_channels=cfg.supernet.partial_channels,
            edge_norm=cfg.supernet.edge_norm, edge_ops=edge_ops,
        ).to(device)
        _init_alphas(model, cfg.method.alpha_init, cfg.method.alpha_map)
        w_opt = torch.optim.SGD(model.weight_parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        a_opt = torch.optim.Adam(model.arch_parameters(), lr=s.arch_lr, betas=tuple(s.arch_betas),
                                 weight_decay=s.arch_weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=E, eta_min=s.lr_min)
        return model, w_opt, a_opt, sched

    ckpt = load_checkpoint(out)
    if ckpt is not None:
        check_same_config(out, ckpt["config"], config)
    stage = ckpt.get("stage", 0) if ckpt is not None else 0
    edge_ops = ckpt.get("edge_ops") if ckpt is not None else None
    stages_done: list[dict] = list(ckpt.get("stages", [])) if ckpt is not None else []
    model, w_opt, a_opt, sched = build(stage, edge_ops)
    estimator = make_estimator(cfg.method)
    perturbation = make_perturbation(cfg.method)
    history: dict[str, list[np.ndarray]] = {}
    start_epoch, elapsed_before = 0, 0.0

    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        w_opt.load_state_dict(ckpt["weight_optimizer"])
        a_opt.load_state_dict(ckpt["arch_optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        train_stream.load_state_dict(ckpt["train_stream"])
        val_stream.load_state_dict(ckpt["val_stream"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and "cuda" in ckpt["rng"]:  # skip dropout draws on the device
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        if hasattr(estimator, "load_state_dict") and "estimator" in ckpt:
            estimator.load_state_dict(ckpt["estimator"])
        history = {k: [np.asarray(a) for a in v] for k, v in ckpt["alpha_history"].items()}
        start_epoch, elapsed_before = ckpt["epoch"] + 1, ckpt["elapsed"]
        log.info("resuming %s from epoch %d", out, start_epoch)
    for name in (METRICS, GENOTYPES):
        truncate_jsonl(out / name, start_epoch)

    split = {"seed": cfg.seed, "fraction": dataset_cfg.search_split, "train": len(train_idx), "val": len(val_idx),
             "train_hash": index_hash(train_idx), "val_hash": index_hash(val_idx)}
    log.info("search: %s on %s, %s, %d epochs%s, %d steps/epoch, device %s -> %s", cfg.method.name,
             dataset_cfg.name, cfg.space.name, total_epochs, f" in {len(plan)} stages" if len(plan) > 1 else "",
             train_stream.batches_per_pass, device, out)

    last_row: dict = {}
    for epoch in range(start_epoch, total_epochs):
        if epoch // E != stage:  # the previous stage is over: keep its strongest ops, start the next
            stages_done.append(_end_stage(model, plan, stage, E, cfg, out, stages_done))
            edge_ops = stages_done[-1]["next_edge_ops"]
            stage = epoch // E
            model, w_opt, a_opt, sched = build(stage, edge_ops)
            log.info("stage %d/%d: %d cells, %d ops per edge", stage + 1, len(plan), plan[stage]["layers"],
                     model.alpha_shape("normal")[1])
        e = epoch - stage * E  # the epoch within the stage: drives the lr, warm-up and ramps
        t0 = time.time()
        lr = sched.get_last_lr()[0]
        arch_active = e >= s.arch_warmup_epochs
        p0 = plan[stage]["skip_dropout"]
        drop = skip_dropout_rate(p0, e, E, s.arch_warmup_epochs) if p0 > 0 else 0.0
        if p0 > 0:
            model.set_skip_dropout(drop)
        stats = _train_epoch(model, estimator, perturbation, train_stream, val_stream, w_opt, a_opt, lr, arch_active,
                             s.grad_clip, cfg.progress, e, E, arch_grad_clip=s.arch_grad_clip)
        sched.step()
        val_loss, val_acc = evaluate(model, data.train, val_idx, s.eval_batch_size, data.mean, data.std, device)
        seconds = time.time() - t0
        mix = model.mixing_weights()
        genotype = model.genotype(cfg.space.name)
        for kind, weights in _recorded_weights(model).items():
            history.setdefault(kind, []).append(weights)
        row = {
            "epoch": epoch,
            **({"stage": stage, "stage_epoch": e, "layers": plan[stage]["layers"]} if len(plan) > 1 else {}),
            **({"skip_dropout": drop} if p0 > 0 else {}),
            "lr": lr,
            "arch_active": arch_active,
            **stats,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "alpha_entropy_normal": alpha_entropy(mix["normal"]),
            "alpha_entropy_reduce": alpha_entropy(mix["reduce"]),
            "skip_normal": genotype.count("skip_connect", "normal"),
            "skip_reduce": genotype.count("skip_connect", "reduce"),
            "param_free_normal": genotype.count_parameter_free("normal"),
            "param_free_reduce": genotype.count_parameter_free("reduce"),
            "seconds": seconds,
            "images_per_s": stats["images"] / seconds,
        }
        append_jsonl(out / METRICS, row)
        append_jsonl(out / GENOTYPES, {"epoch": epoch, **({"stage": stage} if len(plan) > 1 else {}),
                                        "genotype": genotype.to_dict()})
        _save_alphas(out / ALPHAS, history, model)
        atomic_torch_save(
            {
                "config": config,
                "epoch": epoch,
                "elapsed": elapsed_before + (time.time() - started),
                "model": model.state_dict(),
                "weight_optimizer": w_opt.state_dict(),
                "arch_optimizer": a_opt.state_dict(),
                "scheduler": sched.state_dict(),
                "train_stream": train_stream.state_dict(),
                "val_stream": val_stream.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})},
                "stage": stage,
                "edge_ops": model.edge_ops,
                "stages": stages_done,
                **({"estimator": estimator.state_dict()} if hasattr(estimator, "state_dict") else {}),
                "alpha_history": {k: [a.tolist() for a in v] for k, v in history.items()},
            },
            out / CHECKPOINT,
        )
        log.info("epoch %d/%d  train_acc %.4f  val_acc %.4f  skip %d  %.1fs  %s", epoch + 1, total_epochs,
                 stats["train_acc"], val_acc, row["skip_normal"], seconds, genotype)
        last_row = row
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)

    if not last_row:
        rows = read_jsonl(out / METRICS)
        last_row = rows[-1] if rows else {}
    if len(plan) > 1:
        stages_done.append(_end_stage(model, plan, stage, E, cfg, out, stages_done))
    genotype, refinement = _final_genotype(model, cfg)
    genotype.save(out / "genotype.json")
    _draw_cells(genotype, out / "cells.png", f"{cfg.method.name} on {dataset_cfg.name}, seed {cfg.seed}")
    ckpt = load_checkpoint(out)
    result = write_result(
        out,
        "completed",
        command="search",
        method=cfg.method.name,
        space=cfg.space.name,
        dataset=dataset_cfg.name,
        seed=cfg.seed,
        epochs=total_epochs,
        final={k: last_row.get(k) for k in ("train_acc", "val_acc", "val_loss", "skip_normal", "skip_reduce")},
        genotype=genotype.to_dict(),
        **({"stages": [_public(r) for r in stages_done]} if len(plan) > 1 else {}),
        **({"skip_refinement": refinement} if refinement is not None else {}),
        wall_seconds=ckpt["elapsed"] if ckpt else time.time() - started,
        split=split,
        data=data.info,
        environment=environment(device),
        config=config,
    )
    log.info("search finished: val_acc %.4f, genotype %s -> %s", last_row.get("val_acc", float("nan")), genotype,
             out / "genotype.json")
    return result


def _draw_cells(genotype, path: Path, title: str) -> None:
    """cells.png beside genotype.json; a drawing problem must never fail a finished search."""
    try:
        from nasrun.plot import plot_genotype

        plot_genotype(genotype, path, title)
    except Exception as exc:  # noqa: BLE001 - the genotype is already saved
        log.warning("could not draw %s: %s", path, exc)


def _train_epoch(model, estimator, perturbation, train_stream, val_stream, w_opt, a_opt, lr, arch_active,
                 grad_clip, progress, epoch, epochs, arch_grad_clip=None) -> dict:
    model.train()
    steps = train_stream.batches_per_pass
    totals = {"loss": 0.0, "correct": 0, "n": 0, "arch_loss": 0.0, "arch_correct": 0, "arch_n": 0}
    arch_stats: dict[str, list[float]] = {}
    bar = _progress(progress, f"epoch {epoch + 1}/{epochs}", steps)
    after_step = getattr(estimator, "after_step", None)
    for step in range(steps):
        x, y = next(train_stream)
        xv, yv = next(val_stream)
        arch = None
        if arch_active:  # an estimator may skip a step (None), or move the alphas itself (arch.update)
            arch = estimator(model, ArchBatch(x, y, xv, yv, w_opt, lr, epoch, epochs, step, train_stream, val_stream))
        if arch is not None:
            for key, value in arch.stats.items():
                arch_stats.setdefault(key, []).append(value)
            if arch.update is not None:
                with torch.no_grad():
                    for p, u in zip(model.arch_parameters(), arch.update):
                        p.add_(u)
            else:
                a_opt.zero_grad(set_to_none=True)
                for p, g in zip(model.arch_parameters(), arch.grads):
                    p.grad = g.detach()
                if arch_grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.arch_parameters(), arch_grad_clip)
                a_opt.step()
            if after_step is not None:
                after_step(model)
            totals["arch_loss"] += arch.val_loss * len(yv)
            totals["arch_correct"] += arch.val_correct
            totals["arch_n"] += len(yv)
        mix = perturbation(model, x, y, epoch, epochs)
        w_opt.zero_grad(set_to_none=True)
        logits = model(x) if mix is None else model(x, mix)
        loss = F.cross_entropy(logits, y)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLoss(f"training loss is {loss_value} at lr {lr}")
        loss.backward()
        for p in model.arch_parameters():
            p.grad = None
        torch.nn.utils.clip_grad_norm_(model.weight_parameters(), grad_clip)
        w_opt.step()
        totals["loss"] += loss_value * len(y)
        totals["correct"] += int((logits.argmax(1) == y).sum())
        totals["n"] += len(y)
        if bar is not None:
            bar[0].advance(bar[1])
    if bar is not None:
        bar[0].stop()
    n, an = max(totals["n"], 1), max(totals["arch_n"], 1)
    return {
        "train_loss": totals["loss"] / n,
        "train_acc": totals["correct"] / n,
        "arch_val_loss": totals["arch_loss"] / an if totals["arch_n"] else None,
        "arch_val_acc": totals["arch_correct"] / an if totals["arch_n"] else None,
        "images": totals["n"] + totals["arch_n"],
        # per-step diagnostics of the estimator, averaged over the epoch (||g1||, ||second term||, cosine)
        **{key: sum(values) / len(values) for key, values in arch_stats.items()},
    }


def _init_alphas(model: SuperNet, value: Optional[float], alpha_map: str) -> None:
    """``method.alpha_init`` (a number fills every alpha; None keeps the supernet's 1e-3 * N(0, 1)) and ``method.alpha_map``."""
    model.alpha_map = alpha_map
    if value is not None:
        with torch.no_grad():
            model.alphas_normal.fill_(value)
            model.alphas_reduce.fill_(value)


def _progress(enabled: bool, label: str, total: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   transient=True)
    if not bar.console.is_terminal:
        return None
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, task


@torch.no_grad()
def evaluate(model, data, indices, batch_size, mean, std, device) -> tuple[float, float]:
    """Loss and accuracy in eval mode over a fixed set of images (no augmentation)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in eval_batches(data, indices, batch_size, mean, std, device):
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    model.train(was_training)
    return loss_sum / max(n, 1), correct / max(n, 1)


def stage_plan(cfg: NasrunConf) -> list[dict]:
    """Cells, ops kept at the end and initial skip-dropout rate of every stage of the schedule."""
    m, net = cfg.method, cfg.supernet
    if m.schedule != "progressive":
        return [{"layers": net.layers, "keep": None, "skip_dropout": net.skip_dropout[0]}]
    rates = net.skip_dropout * len(m.stage_keep) if len(net.skip_dropout) == 1 else net.skip_dropout
    return [{"layers": net.layers + add, "keep": keep, "skip_dropout": rate}
            for add, keep, rate in zip(m.stage_add_layers, m.stage_keep, rates)]


def _end_stage(model: SuperNet, plan: list[dict], stage: int, epochs: int, cfg: NasrunConf, out: Path,
               done: list[dict]) -> dict:
    """Record a finished stage (its ops, the ops each edge keeps, its genotype) and rewrite stages.json.

    Every edge keeps its ``keep`` ops of largest softmax weight; the last stage drops ``none`` first.
    The next stage starts from a fresh supernet (new weights, new alphas) over the kept ops, as
    P-DARTS does: nothing but the op sets carries over.
    """
    last = stage == len(plan) - 1
    mix = model.mixing_weights()
    kept = {kind: keep_strongest(mix[kind], model.edge_ops[kind], plan[stage]["keep"], model.ops, drop_none=last)
            for kind in ("normal", "reduce")}

    def names(rows):
        return [[model.ops[k] for k in row] for row in rows]

    record = {
        "stage": stage,
        "layers": plan[stage]["layers"],
        "epochs": [stage * epochs, (stage + 1) * epochs - 1],
        "skip_dropout": plan[stage]["skip_dropout"],
        "ops": {kind: names(rows) for kind, rows in model.edge_ops.items()},
        "kept": {kind: names(rows) for kind, rows in kept.items()},
        "genotype": model.genotype(cfg.space.name).to_dict(),
        "next_edge_ops": kept,
    }
    atomic_write_json(out / STAGES, [_public(r) for r in [*done, record]])
    log.info("stage %d/%d done: %d ops per edge kept; genotype %s", stage + 1, len(plan), len(kept["normal"][0]),
             record["genotype"])
    return record


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "next_edge_ops"}


def _final_genotype(model: SuperNet, cfg: NasrunConf):
    """The searched genotype, limited to method.max_skips skip connections in the normal cell when set."""
    if cfg.method.max_skips is None:
        return model.genotype(cfg.space.name), None
    with torch.no_grad():
        w = model.vocabulary_weights()
    genotype, family = refine_skips(w["normal"], w["reduce"], model.ops, model.nodes, cfg.method.max_skips,
                                    cfg.space.name)
    log.info("skip refinement to at most %d: %s", cfg.method.max_skips, genotype)
    return genotype, {"max_skips": cfg.method.max_skips, "family": family}


def _recorded_weights(model: SuperNet) -> dict[str, np.ndarray]:
    """What alphas.npz keeps per epoch: mixing weights on the full op vocabulary (+ edge weights)."""
    with torch.no_grad():
        out = {k: v.cpu().numpy() for k, v in model.vocabulary_weights(with_edges=False).items()}
        edges = model.edge_weights()
        if edges is not None:
            out.update({f"edges_{k}": v.cpu().numpy() for k, v in edges.items()})
    return out


def _save_alphas(path: Path, history: dict, model: SuperNet) -> None:
    """alphas.npz: softmaxed alpha per epoch, (epochs, edges, ops) per cell type, plus the op names."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: np.stack(v) for k, v in history.items()}, ops=np.array(list(model.ops)))
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["run_search", "evaluate", "alpha_entropy"]
