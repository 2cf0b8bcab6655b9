"""The search loop: the one implementation of the bilevel loop that every method composes.

Per step: an architecture step on a validation batch (the estimator, applied by
:func:`apply_arch_step`), then a weight step on the training batch under the perturbation's mixing
weights. Per epoch: a metrics row, a genotype row, the alpha history and an atomic checkpoint of
the :class:`SearchState`. The schedule says what each epoch does and what ends a stage.
``run_search`` takes a typed config and an output folder, so it runs the same from the CLI, from
Python and from tests.
"""

from __future__ import annotations

import io
import logging
import time
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from nasrun.parallel import distributed
from nasrun.config.schema import DatasetConf, NasrunConf
from nasrun.config.compose import as_plain_dict
from nasrun.data import index_hash, load_dataset, make_stream, search_split
from nasrun.data.loaders import make_shard_stream
from nasrun.parallel.distributed import Job
from nasrun.search.evidence import EpochLog, Evidence
from nasrun.run.lifecycle import recorded
from nasrun.methods import ArchBatch, ArchObjective, apply_arch_step, make_estimator, make_perturbation, make_schedule
from nasrun.methods.schedules import EpochPlan, public
from nasrun.run.folder import METRICS, RunFolder, environment
from nasrun.run.files import atomic_write_bytes, atomic_write_json
from nasrun.run.rng import resolve_device, seed_everything
from nasrun.train.memory import check_fits
from nasrun.train.precision import Numerics, check_available, upcast
from nasrun.parallel.rank_runs import NoEpochLog, reseed_rank, run_ranks
from nasrun.parallel.search_ranks import attach_ranks, check_search_ranks, evaluate_ranks, rank_steps, shared_mix
from nasrun.search.selection import outcome as selection_outcome
from nasrun.search.selection import read_final
from nasrun.search.selection import tuning_epochs
from nasrun.search.state import CHECKPOINT_SCHEMA, SearchState, build_supernet
from nasrun.spaces.ops import NOISE
from nasrun.spaces.space import Space
from nasrun.supernet.stages import aux_skip_weight
from nasrun.train.steps import Progress, apply_threads, count, evaluate, sgd_step

log = logging.getLogger(__name__)

GENOTYPES = "genotypes.jsonl"
ALPHAS = "alphas.npz"
STAGES = "stages.json"

EpochHook = Callable[[int, dict], None]


class Stopwatch:
    """Seconds since it was made, less the time spent inside :meth:`paused`."""

    def __init__(self) -> None:
        self.start = time.time()

    def seconds(self) -> float:
        return time.time() - self.start

    @contextmanager
    def paused(self) -> Iterator[None]:
        stopped = time.time()
        try:
            yield
        finally:
            self.start += time.time() - stopped


def alpha_entropy(weights: torch.Tensor) -> float:
    """Mean over edges of the entropy of the mixing weights (log K when uniform, 0 when one-hot)."""
    w = weights.detach().clamp_min(1e-12)
    return float(-(w * w.log()).sum(-1).mean())


def run_search(cfg: NasrunConf, out_dir: str | Path, on_epoch_end: Optional[EpochHook] = None) -> dict:
    """Search a genotype into ``out_dir``; resume from its checkpoint if there is one.

    Under torchrun every process runs this; rank 0 writes the run folder (see :mod:`nasrun.parallel.search_ranks`).
    """
    return run_to_end(search_epochs(cfg, out_dir, on_epoch_end))


def search_epochs(cfg: NasrunConf, out_dir: str | Path, on_epoch_end: Optional[EpochHook] = None,
                  trainer: Optional[Any] = None) -> Generator[int, None, dict]:
    """:func:`run_search` one epoch at a time: yields each epoch's number once its checkpoint is written,
    returns the result. A population advances its members this way (:mod:`nasrun.run.population`);
    an exception thrown in at a yield ends the run as it would have ended there (recorded in result.json).

    ``trainer`` (a stacked population's, :mod:`nasrun.run.stacked`) trains and evaluates the epochs instead of
    :func:`train_epoch` and :func:`evaluate`: it gets the state, the data and the search-val indices once the
    run is set up (``ready``; the generator then yields -1 before the first epoch) and gives each epoch's
    statistics (``train``) and evaluation (``evaluated``); ``trainer.plain`` builds the supernet without fused
    edges.
    """
    config = as_plain_dict(cfg)
    check_search_ranks(cfg)
    holder: dict = {}

    def last_epoch() -> Optional[int]:
        return holder["state"].epoch - 1 if "state" in holder else None

    if distributed.is_distributed():
        return run_ranks("search", out_dir, config, "search.log", cfg.device,
                         lambda run, job: run_to_end(_search(cfg, config, run, holder, on_epoch_end, job=job)),
                         last_epoch)
    with RunFolder(out_dir, "search", "search.log") as run:
        previous = run.completed(config)
        if previous is not None:
            log.info("%s already holds a completed search; nothing to do", run.path)
            return previous
        with recorded(run, config, last_epoch):
            return (yield from _search(cfg, config, run, holder, on_epoch_end, trainer))


def run_to_end(epochs: Generator[int, None, dict]) -> dict:
    """Drive a generator of epochs to its end; its return value."""
    while True:
        try:
            next(epochs)
        except StopIteration as stop:
            return stop.value


def _search(cfg: NasrunConf, config: dict, run: RunFolder, holder: dict, on_epoch_end: Optional[EpochHook],
            trainer: Optional[Any] = None, job: Optional[Job] = None) -> Generator[int, None, dict]:
    started = Stopwatch()
    device = resolve_device(cfg.device) if job is None else job.device
    check_available(cfg.precision, device)
    dataset_cfg = cfg.dataset or DatasetConf()
    stages = make_schedule(cfg.schedule, cfg.supernet.layers, list(cfg.supernet.skip_dropout), 1, 0).stages
    deepest = max(stage.layers for stage in stages)
    check_fits(lambda: build_supernet(cfg, dataset_cfg.num_classes, dataset_cfg.in_channels, deepest), device,
               f"the supernet (supernet.C={cfg.supernet.C}, {deepest} cells)")
    seed_everything(cfg.seed)
    apply_threads(cfg.threads)
    NOISE.seed(cfg.seed)  # R-DARTS S4's noise op: its own stream, kept in the checkpoint
    data = load_dataset(dataset_cfg)
    train_idx, val_idx = search_split(len(data.train), dataset_cfg.search_split, cfg.seed)
    state = holder["state"] = _new_state(cfg, dataset_cfg, data, train_idx, val_idx, device, job,
                                         fused=False if getattr(trainer, "plain", False) else None)
    evidence = Evidence(cfg, data, val_idx, device) if run.writes else None  # rank 0's (eval mode): no collectives
    epoch_log = EpochLog(cfg, run.path, "search") if run.writes else NoEpochLog()
    ckpt = run.load_checkpoint(config, CHECKPOINT_SCHEMA) if run.writes else None
    if job is not None:  # rank 0 read it; every rank resumes from it (no shared file system needed)
        ckpt = job.share(ckpt)
    if ckpt is not None:
        state.load_state_dict(ckpt)
        log.info("resuming %s after epoch %d (of %d)", run.path, state.epoch, state.schedule.total_epochs)
    if job is not None:
        _join(state, job)
    for name in (METRICS, GENOTYPES):
        run.truncate(name, state.epoch)
    schedule = state.schedule
    stages = f" in {len(schedule.stages)} stages" if schedule.staged else ""
    log.info("search: %s on %s, %s, %s%s, %s per epoch, device %s -> %s", cfg.method.name, dataset_cfg.name,
             cfg.space.name, count(schedule.total_epochs, "epoch"), stages,
             count(state.train_stream.batches_per_pass, "step"), device, run.path)
    if trainer is not None:  # a stacked population sets every member up before it trains any
        trainer.ready(state, data, val_idx)
        with started.paused():
            yield -1
    for epoch in range(state.epoch, schedule.total_epochs):
        plan = schedule.plan(epoch)
        if plan.stage != state.stage:  # the previous stage is over: keep its strongest ops, start the next
            _next_stage(state, run, plan.stage)
        row = _search_epoch(state, plan, data, val_idx, run, config, started, evidence, trainer)
        epoch_log.epoch(epoch, row, lambda: (state.model.genotype(), _history(state)))
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        with started.paused():  # a population runs other members meanwhile: their time is not this run's
            yield epoch
    if cfg.selection.tunes:  # DARTS-PT: decisions and tuning epochs after the search's own
        yield from tuning_epochs(state, run, data, val_idx, config, started, train_epoch,
                                 evidence.lookup if evidence is not None else lambda genotype: {})
    epoch_log.close()
    if job is None:
        return _finish(state, run, data, dataset_cfg, train_idx, val_idx, config, device, started)
    result = _finish(state, run, data, dataset_cfg, train_idx, val_idx, config, device, started) if run.writes \
        else None
    return job.share(result)  # also the last barrier: no rank ends before rank 0 has written the result


def _join(state: SearchState, job: Job) -> None:
    """This process as a rank of the job: DDP (and global BN), and random draws of its own on ranks other than 0."""
    attach_ranks(state, job)
    if job.rank > 0:
        reseed_rank(state.cfg.seed, job.rank, state.epoch)


def _new_state(cfg: NasrunConf, dataset_cfg: DatasetConf, data, train_idx, val_idx, device,
               job: Optional[Job] = None, fused: Optional[bool] = None) -> SearchState:
    s = cfg.search
    common = dict(mean=data.mean, std=data.std, crop_padding=dataset_cfg.crop_padding, device=device,
                  loader=dataset_cfg.loader, workers=dataset_cfg.workers, pin_memory=dataset_cfg.pin_memory)
    stream = make_stream if job is None else partial(make_shard_stream, job.rank, job.world)
    train_stream = stream(data.train, train_idx, s.batch_size, seed=cfg.seed * 1000 + 1,
                          augment=dataset_cfg.train_augment, **common)
    val_stream = stream(data.train, val_idx, s.batch_size, seed=cfg.seed * 1000 + 2,
                        augment=dataset_cfg.train_augment if dataset_cfg.augment_val else (), **common)
    schedule = make_schedule(cfg.schedule, cfg.supernet.layers, list(cfg.supernet.skip_dropout), s.epochs,
                             s.arch_warmup_epochs)
    objective = ArchObjective(Numerics.of(cfg))
    return SearchState(cfg, dataset_cfg.num_classes, dataset_cfg.in_channels, device, schedule,
                       make_estimator(cfg.estimator, objective), make_perturbation(cfg.perturbation, objective),
                       train_stream, val_stream, fused)


def _next_stage(state: SearchState, run: RunFolder, stage: int) -> None:
    _end_stage(state, run)
    if state.schedule.widens:  # DrNAS: the same supernet, widened, with the kept ops
        state.widen_stage(stage, state.stages[-1]["next_edge_ops"])
    else:
        state.start_stage(stage, state.stages[-1]["next_edge_ops"])
    if state.job is not None:  # the stage's new supernet, in DDP like the last one
        attach_ranks(state, state.job)
    log.info("stage %d/%d: %d cells, %d ops per edge", stage + 1, len(state.schedule.stages),
             state.schedule.stages[stage].layers, state.model.alpha_shape(state.model.kinds[0])[1])


def _end_stage(state: SearchState, run: RunFolder) -> None:
    record = state.schedule.end_stage(state.model, state.stage)
    state.stages.append(record)
    if run.writes:
        atomic_write_json(run.path / STAGES, [public(r) for r in state.stages])
    log.info("stage %d/%d done: %d ops per edge kept; genotype %s", state.stage + 1, len(state.schedule.stages),
             len(next(iter(record["kept"].values()))[0]), record["genotype"])


def _search_epoch(state: SearchState, plan: EpochPlan, data, val_idx, run: RunFolder, config: dict,
                  started: Stopwatch, evidence: Optional[Evidence], trainer: Optional[Any] = None) -> dict:
    """Train one epoch, evaluate, write its rows and the checkpoint; return the metrics row."""
    cfg, model, schedule = state.cfg, state.model, state.schedule
    t0 = time.time()
    lr = state.lr_schedule.get_last_lr()[0]
    if schedule.stages[plan.stage].skip_dropout > 0:
        model.set_skip_dropout(plan.skip_dropout)
    stats = trainer.train(state, plan, lr) if trainer is not None else train_epoch(state, plan, lr)
    state.lr_schedule.step()
    if trainer is not None:  # a stacked population evaluated its members together, after their training
        val_loss, val_acc = trainer.evaluated(state)
    elif state.job is None:
        val_loss, val_acc = evaluate(model, data.train, val_idx, cfg.search.eval_batch_size, data.mean, data.std,
                                     state.device, numerics=state.numerics)
    else:
        val_loss, val_acc = evaluate_ranks(state, data, val_idx)
    # a stacked population trained this epoch outside this call: its share of that time is this run's
    away = stats.pop("train_seconds", 0.0)
    state.elapsed += away
    seconds = time.time() - t0 + away
    genotype = model.genotype()
    state.record_alphas()
    row = {**_metrics_row(state, plan, lr, stats, val_loss, val_acc, genotype, seconds),
           **(evidence.measure(model, genotype) if evidence is not None else {})}
    run.append(METRICS, row)
    run.append(GENOTYPES, {"epoch": plan.epoch, **({"stage": plan.stage} if schedule.staged else {}),
                           "genotype": genotype.to_dict()})
    if run.writes:
        _save_alphas(run.path / ALPHAS, state)
    state.epoch = plan.epoch + 1
    run.save_checkpoint({"config": config, **state.state_dict(), "elapsed": state.elapsed + started.seconds()})
    log.info("epoch %d/%d  train_loss %.4f  train_acc %.4f  val_loss %.4f  val_acc %.4f  skip %d  %.1fs",
             plan.epoch + 1, schedule.total_epochs, stats["train_loss"], stats["train_acc"], val_loss, val_acc,
             row["skip_normal"], seconds)
    log.debug("epoch %d genotype: %s", plan.epoch + 1, genotype)
    return row


def _metrics_row(state: SearchState, plan: EpochPlan, lr: float, stats: dict, val_loss: float, val_acc: float,
                 genotype, seconds: float) -> dict:
    mix = state.model.summary_weights()  # never a sample: what the alphas say
    staged = state.schedule.staged
    return {
        "epoch": plan.epoch,
        **({"stage": plan.stage, "stage_epoch": plan.stage_epoch,
            "layers": state.schedule.stages[plan.stage].layers} if staged else {}),
        **({"skip_dropout": plan.skip_dropout} if state.schedule.stages[plan.stage].skip_dropout > 0 else {}),
        **({"aux_skip": aux_skip_weight(state.cfg.supernet.aux_skip, plan.stage_epoch, state.schedule.epochs,
                                        state.cfg.supernet.aux_skip_decay)} if state.cfg.supernet.aux_skip > 0 else {}),
        "lr": lr,
        "arch_active": plan.arch_active,
        **stats,
        "val_loss": val_loss,
        "val_acc": val_acc,
        **{f"alpha_entropy_{kind}": alpha_entropy(w) for kind, w in mix.items()},
        "skip_normal": genotype.count("skip_connect", "normal"),
        "skip_reduce": genotype.count("skip_connect", "reduce"),
        "param_free_normal": genotype.count_parameter_free("normal"),
        "param_free_reduce": genotype.count_parameter_free("reduce"),
        "seconds": seconds,
        "images_per_s": stats["images"] / seconds,
    }


class _Totals:
    """Running sums of one epoch's losses and accuracies, and the estimator's per-step diagnostics."""

    def __init__(self) -> None:
        self.loss = self.arch_loss = 0.0
        self.correct = self.n = self.arch_correct = self.arch_n = 0
        self.arch_stats: dict[str, list[float]] = {}

    def add_ranks(self, job: Optional[Job]) -> None:
        """Under torchrun: the sums of every rank's slices (the diagnostics are of global gradients already)."""
        if job is not None:
            sums = job.sum([self.loss, self.correct, self.n, self.arch_loss, self.arch_correct, self.arch_n])
            self.loss, self.arch_loss = sums[0], sums[3]
            self.correct, self.n, self.arch_correct, self.arch_n = (int(v) for v in sums[1:3] + sums[4:])

    def summary(self) -> dict:
        n, an = max(self.n, 1), max(self.arch_n, 1)
        return {
            "train_loss": self.loss / n,
            "train_acc": self.correct / n,
            "arch_val_loss": self.arch_loss / an if self.arch_n else None,
            "arch_val_acc": self.arch_correct / an if self.arch_n else None,
            "images": self.n + self.arch_n,
            # per-step diagnostics of the estimator, averaged over the epoch (||g1||, ||second term||, cosine)
            **{key: sum(values) / len(values) for key, values in self.arch_stats.items()},
        }


def train_epoch(state: SearchState, plan: EpochPlan, lr: float) -> dict:
    """One pass of the search-train stream: an architecture step (when active), then a weight step
    (``search.order=weight_first``: the weight step first)."""
    model, job = state.model, state.job
    model.train()
    steps = state.train_stream.batches_per_pass
    totals = _Totals()
    show = state.cfg.progress and (job is None or job.rank == 0)
    bar = Progress(show, f"epoch {plan.epoch + 1}/{state.schedule.total_epochs}", steps)
    state.alpha_map.begin_epoch(plan.stage_epoch, state.schedule.epochs)
    weight_first = state.cfg.search.order == "weight_first"
    net = state.cfg.supernet
    if net.aux_skip > 0:
        model.set_aux_skip(aux_skip_weight(net.aux_skip, plan.stage_epoch, state.schedule.epochs, net.aux_skip_decay))
    with rank_steps(state) if job is not None else nullcontext():
        for step in range(steps):
            if job is not None:
                job.injected_failure(plan.epoch, step)
            state.alpha_map.begin_step()
            x, y = next(state.train_stream)
            xv, yv = next(state.val_stream)
            if weight_first:  # GDAS: the weight step on the training batch, then the architecture step
                _weight_step(state, plan, lr, x, y, totals)
            if plan.arch_active:
                _arch_step(state, plan, lr, step, (x, y, xv, yv), totals)
            if not weight_first:
                _weight_step(state, plan, lr, x, y, totals)
            bar.advance()
    bar.stop()
    totals.add_ranks(job)
    return totals.summary()


def _arch_step(state: SearchState, plan: EpochPlan, lr: float, step: int, batches: tuple, totals: _Totals) -> None:
    x, y, xv, yv = batches
    epochs = state.schedule.epochs
    batch = ArchBatch(x, y, xv, yv, state.w_opt, lr, plan.stage_epoch, epochs, step, state.train_stream,
                      state.val_stream)
    arch = state.estimator(state.model, batch)  # None: the estimator skips this step
    if arch is None:
        return
    for key, value in arch.stats.items():
        totals.arch_stats.setdefault(key, []).append(value)
    apply_arch_step(state.model, arch, state.a_opt, state.estimator, state.cfg.search.arch_grad_clip)
    totals.arch_loss += arch.val_loss * len(yv)
    totals.arch_correct += arch.val_correct
    totals.arch_n += len(yv)


def _weight_step(state: SearchState, plan: EpochPlan, lr: float, x, y, totals: _Totals) -> None:
    model = state.model
    joint = state.cfg.search.clip_with_alphas  # GDAS: the alphas' gradient of this loss counts in the clip
    mix = model.mixing_weights() if joint else state.perturbation(model, x, y, plan.stage_epoch, state.schedule.epochs)
    if state.parallel is not None:
        logits, loss_sum = _weight_step_ranks(state, lr, x, y, shared_mix(state.job, mix))
    else:
        logits = _logits(state, model, x, mix)
        loss = F.cross_entropy(logits, y)
        arch = model.arch_parameters()
        loss_sum = len(y) * sgd_step(loss, state.w_opt, model.weight_parameters(), state.cfg.search.grad_clip, lr,
                                     clear=() if joint else arch, clip_also=arch if joint else ())
    totals.loss += loss_sum
    totals.correct += int((logits.argmax(1) == y).sum())
    totals.n += len(y)


def _logits(state: SearchState, module: torch.nn.Module, x: torch.Tensor, mix=None) -> torch.Tensor:
    """fp32 logits of the supernet (or its DDP wrapper) under the run's precision and memory format."""
    xs = state.numerics.inputs(x)
    with state.numerics.autocast(x.device):
        return upcast(module(xs) if mix is None else module(xs, mix))


def _weight_step_ranks(state: SearchState, lr: float, x, y, mix=None) -> tuple[torch.Tensor, float]:
    """The weight step through DDP: this rank's logits and its slice's summed loss.

    The loss is the slice's sum times world/B (B: the global batch); DDP averages the ranks' gradients,
    which gives the global batch's mean-loss gradient even when a short last batch splits unevenly.
    """
    scale = state.job.world / state.train_stream.global_batch
    logits = _logits(state, state.parallel, x, mix)
    loss = F.cross_entropy(logits, y, reduction="sum") * scale
    value = sgd_step(loss, state.w_opt, state.model.weight_parameters(), state.cfg.search.grad_clip, lr,
                     clear=state.model.arch_parameters())
    return logits, value / scale


def _finish(state: SearchState, run: RunFolder, data, dataset_cfg: DatasetConf, train_idx, val_idx, config: dict,
            device: torch.device, started: Stopwatch) -> dict:
    """After the last epoch: the final stage record, genotype.json, cells.png and result.json."""
    cfg = state.cfg
    rows = run.rows(METRICS)
    selected, selected_final = selection_outcome(run, state) if state.selection is not None else (None, {})
    last_row = {**(rows[-1] if rows else {}), **selected_final}  # a selection reports its own genotype
    if state.schedule.staged:
        _end_stage(state, run)
    genotype, refinement = state.schedule.final_genotype(state.model)
    genotype, ruled, ruled_final = read_final(state, genotype, run.path)
    if ruled is not None:  # a released method's own rule: its genotype and skip counts, the space rule's on record
        selected, last_row = ruled, {**last_row, **ruled_final}
    genotype = genotype.with_space(Space(cfg.space))  # genotype.json carries its space: retrainable anywhere
    genotype.save(run.path / "genotype.json")
    _draw_cells(genotype, run.path / "cells.png", f"{cfg.method.name} on {dataset_cfg.name}, seed {cfg.seed}")
    split = {"seed": cfg.seed, "fraction": dataset_cfg.search_split, "train": len(train_idx), "val": len(val_idx),
             "train_hash": index_hash(train_idx), "val_hash": index_hash(val_idx)}
    result = run.write_result(
        "completed",
        command="search",
        method=cfg.method.name,
        space=cfg.space.name,
        dataset=dataset_cfg.name,
        seed=cfg.seed,
        epochs=state.schedule.total_epochs,
        final={**{k: last_row.get(k) for k in ("train_acc", "val_acc", "val_loss", "skip_normal", "skip_reduce")},
               **{k: v for k, v in last_row.items() if k == "eigenvalue" or k.startswith("bench_")}},
        genotype=genotype.to_dict(),
        **({"stages": [public(r) for r in state.stages]} if state.schedule.staged else {}),
        **({"skip_refinement": refinement} if refinement is not None else {}),
        **({"selection": selected} if selected is not None else {}),
        wall_seconds=state.elapsed + started.seconds(),
        split=split,
        data=data.info,
        environment=environment(device),
        **state.numerics.record(),
        compile=state.capture.record(),  # search.compile asked for, the mode used, and why they differ
        world_size=1 if state.job is None else state.job.world,
        config=config,
    )
    log.info("search finished: val_acc %.4f -> %s\n%s", last_row.get("val_acc", float("nan")),
             run.path / "genotype.json", genotype)
    return result


def _draw_cells(genotype, path: Path, title: str) -> None:
    """cells.png beside genotype.json; a drawing problem must never fail a finished search."""
    try:
        from nasrun.report.cell_diagram import plot_genotype

        plot_genotype(genotype, path, title)
    except Exception as exc:  # noqa: BLE001 - the genotype is already saved
        log.warning("could not draw %s: %s", path, exc)


def _history(state: SearchState) -> dict:
    """The alpha history as alphas.npz holds it: per kind (epochs, edges, ops), plus the op names."""
    return {**{k: np.stack(v) for k, v in state.history.items()}, "ops": np.array(list(state.model.ops))}


def _save_alphas(path: Path, state: SearchState) -> None:
    """alphas.npz: mixing weights per epoch, (epochs, edges, ops) per cell type, plus the op names."""
    buf = io.BytesIO()
    np.savez(buf, **_history(state))
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["run_search", "search_epochs", "run_to_end", "train_epoch", "alpha_entropy", "evaluate"]
