"""The retraining loop: a genotype trained from scratch with a recipe, evaluated on the test set.

The genotype comes from a published name, a genotype.json or a search run folder; in the last
case the dataset defaults to the one the search used. Resumes from its checkpoint like the search.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nasrun.parallel import distributed
from nasrun.config.schema import DatasetConf, NasrunConf
from nasrun.config.compose import as_plain_dict
from nasrun.data import load_dataset, make_stream
from nasrun.data.loaders import make_shard_stream
from nasrun.parallel.distributed import Job
from nasrun.errors import ConfigError
from nasrun.genotype.genotype import Genotype
from nasrun.train.inputs import cells_for, genotype_space, resolve_inputs, unify_recipe
from nasrun.search.evidence import EpochLog
from nasrun.run.lifecycle import recorded
from nasrun.train.memory import check_fits
from nasrun.train.precision import FP32, Numerics, check_available, upcast
from nasrun.parallel.rank_runs import NoEpochLog, evaluate_shares, reseed_rank, run_ranks
from nasrun.nets import build_network as network_for
from nasrun.nets import count_macs, count_parameters
from nasrun.run.folder import METRICS, RunFolder, environment
from nasrun.run.files import atomic_torch_save
from nasrun.run.rng import resolve_device, rng_state, seed_everything, set_rng_state
from nasrun.spaces.ops import NOISE
from nasrun.train.steps import apply_threads, count, evaluate_topk, sgd_step

log = logging.getLogger(__name__)


def prepare_retrain(cfg: NasrunConf, layers_given: Optional[bool] = None
                    ) -> tuple[NasrunConf, Genotype, Path | None, dict | None]:
    """Everything a retraining needs before it starts: the effective config, genotype, search folder, unified keys.

    ``layers_given``: whether the command line set ``recipe.layers`` (see :func:`cells_for`).
    """
    genotype, run_folder, dataset = resolve_inputs(cfg)
    space = genotype_space(genotype, run_folder) or cfg.space
    cfg, unified = unify_recipe(replace(cfg, dataset=dataset, space=space), run_folder)
    distributed.check_config(cfg.recipe.batch_size, cfg.device)
    cfg = cells_for(genotype, cfg, layers_given)
    if genotype.inputs == 2 and cfg.recipe.layers < 3:
        raise ConfigError(f"recipe.layers={cfg.recipe.layers} is not allowed: at least 3 for a DARTS-stacked network "
                          "(two reduction cells and a normal cell)")
    return cfg, genotype, run_folder, unified


def build_network(genotype: Genotype, cfg: NasrunConf, dataset: DatasetConf) -> nn.Module:
    r = cfg.recipe
    return network_for(genotype, r.C, dataset.num_classes, r.layers, r.auxiliary, in_channels=dataset.in_channels,
                       input_size=dataset.image_size, network=r.network)


def lr_schedule(opt: torch.optim.Optimizer, r) -> torch.optim.lr_scheduler.LRScheduler:
    """The lr schedule of ``recipe.schedule``, stepped once after every epoch (epoch e trains at its e-th value).

    ``cosine``: CosineAnnealingLR from lr to lr_min over the epochs. ``step``: StepLR, lr · lr_decay^e (DARTS'
    ImageNet recipe: 0.97). ``linear_warmup``: P-DARTS/PC-DARTS' ``adjust_lr`` (E epochs, T = 5):
    lr·(E−T−e)/(E−T) for e < E−T, then lr·(E−e)/((E−T)·T), times (e+1)/W during the first W =
    warmup_epochs epochs (their warm-up, for batches over 256).
    """
    if r.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r.epochs, eta_min=r.lr_min)
    if r.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=r.lr_decay)
    if r.schedule == "linear_warmup":
        return torch.optim.lr_scheduler.LambdaLR(opt, LinearWarmup(r.epochs, r.warmup_epochs, r.LINEAR_DECAY_TAIL))
    raise ConfigError(f"recipe.schedule={r.schedule!r} is not allowed: one of {', '.join(r.SCHEDULES)}")


class LinearWarmup:
    """The lr factor of epoch e in P-DARTS/PC-DARTS' linear schedule (a class, so LambdaLR can save it)."""

    def __init__(self, epochs: int, warmup: int, tail: int) -> None:
        self.epochs, self.warmup, self.tail = epochs, warmup, tail

    def __call__(self, epoch: int) -> float:
        E, T = self.epochs, self.tail
        if epoch < E - T:
            factor = (E - T - epoch) / (E - T)
        else:
            factor = (E - epoch) / ((E - T) * T)
        if epoch < self.warmup:
            factor *= (epoch + 1) / self.warmup
        return factor


def describe_network(model: nn.Module, dataset: DatasetConf) -> dict:
    shape = (dataset.in_channels, dataset.image_size, dataset.image_size)
    return {
        "params": count_parameters(model),
        "params_with_auxiliary": count_parameters(model, include_auxiliary=True),
        "macs": count_macs(model, shape),
        "auxiliary": model.auxiliary_enabled,
        "auxiliary_note": getattr(model, "auxiliary_note", None),
    }


#: What a retraining checkpoint must hold, with the type of each entry (checked before resuming).
CHECKPOINT_SCHEMA = {"config": dict, "epoch": int, "elapsed": (int, float), "model": dict, "optimizer": dict,
                     "scheduler": dict, "stream": dict, "rng": dict}


def run_retrain(cfg: NasrunConf, out_dir: str | Path, on_epoch_end: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Train the genotype of ``cfg.genotype`` from scratch into ``out_dir``; resume if a checkpoint is there."""
    cfg, genotype, run_folder, unified = prepare_retrain(cfg)
    config = as_plain_dict(cfg)
    if distributed.is_distributed():
        return _run_retrain_ranks(cfg, genotype, run_folder, unified, config, out_dir, on_epoch_end)
    with RunFolder(out_dir, "retrain", "retrain.log") as run:
        previous = run.completed(config)
        if previous is not None:
            log.info("%s already holds a completed retraining; nothing to do", run.path)
            return previous
        progress = {"epoch": None}
        with recorded(run, config, lambda: progress["epoch"]):
            return _retrain(cfg, genotype, run_folder, config, run, progress, on_epoch_end, unified)


def _run_retrain_ranks(cfg, genotype, run_folder, unified, config, out_dir, on_epoch_end) -> dict:
    """This rank's part of a torchrun retraining: every rank trains its slice, rank 0 alone writes the run folder."""
    progress: dict = {"epoch": None}

    def body(run: RunFolder, job: Job) -> dict:
        return _retrain(cfg, genotype, run_folder, config, run, progress, on_epoch_end, unified, job)

    return run_ranks("retrain", out_dir, config, "retrain.log", cfg.device, body, lambda: progress["epoch"])


def _retrain(cfg, genotype, run_folder, config, run: RunFolder, progress: dict, on_epoch_end, unified,
             job: Optional[Job] = None) -> dict:
    started = time.time()
    device = resolve_device(cfg.device) if job is None else job.device
    check_available(cfg.precision, device)
    r = cfg.recipe
    check_fits(lambda: build_network(genotype, cfg, cfg.dataset), device,
               f"the network (recipe.C={r.C}, recipe.layers={r.layers})")
    seed_everything(cfg.seed)
    apply_threads(cfg.threads)
    NOISE.seed(cfg.seed)
    t = _Training(cfg, genotype, device) if job is None else _RankTraining(cfg, genotype, device, job)
    start_epoch, elapsed_before = t.resume(run, config, progress)
    run.truncate(METRICS, start_epoch)
    log.info("retrain %s on %s: %s, %s network, C=%d, %s, %.2fM params, %.1fM MACs, %s lr schedule, "
             "device %s -> %s", cfg.genotype, cfg.dataset.name, count(r.epochs, "epoch"), r.network, r.C,
             count(r.layers, "cell"),
             t.network["params"] / 1e6, t.network["macs"] / 1e6, r.schedule, device, run.path)
    epoch_log = EpochLog(cfg, run.path, "retrain") if job is None or job.rank == 0 else NoEpochLog()
    for epoch in range(start_epoch, r.epochs):
        row = t.epoch(epoch)
        run.append(METRICS, row)
        epoch_log.epoch(epoch, row, lambda: (genotype, None))
        run.save_checkpoint({"config": config, "epoch": epoch, "elapsed": elapsed_before + (time.time() - started),
                             **t.state_dict()})
        progress["epoch"] = epoch
        log.info("epoch %d/%d  lr %.3g  train_acc %.4f  test_acc %.4f  top-5 %.4f  %.1fs", epoch + 1, r.epochs,
                 row["lr"], row["train_acc"], row["test_acc"], row["test_acc_top5"], row["seconds"])
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    epoch_log.close()
    if job is None:
        return _finish(t.model, genotype, run_folder, unified, t.network, t.data, device, cfg, config, run,
                       elapsed_before + (time.time() - started))
    result = None
    if job.rank == 0:
        result = _finish(t.model, genotype, run_folder, unified, t.network, t.data, device, cfg, config, run,
                         elapsed_before + (time.time() - started), world_size=job.world)
    return job.share(result)  # also the last barrier: no rank ends before rank 0 has written the result


class _Training:
    """What a retraining carries from epoch to epoch: data, stream, network, optimiser, lr schedule."""

    def __init__(self, cfg: NasrunConf, genotype: Genotype, device: torch.device) -> None:
        r, dataset_cfg = cfg.recipe, cfg.dataset
        self.recipe, self.device, self.numerics = r, device, Numerics.of(cfg)
        self.data = load_dataset(dataset_cfg)
        if r.cutout >= dataset_cfg.image_size:
            log.warning("recipe.cutout=%d covers the whole %dx%d image", r.cutout, dataset_cfg.image_size,
                        dataset_cfg.image_size)
        self.stream = self._make_stream(
            self.data.train, None, r.batch_size, seed=cfg.seed * 1000 + 3, mean=self.data.mean, std=self.data.std,
            augment=dataset_cfg.train_augment, crop_padding=dataset_cfg.crop_padding, cutout=r.cutout, device=device,
            drop_last=False, loader=dataset_cfg.loader, workers=dataset_cfg.workers, pin_memory=dataset_cfg.pin_memory)
        model = build_network(genotype, cfg, dataset_cfg)
        self.network = describe_network(model, dataset_cfg)
        self.model = self.numerics.prepare(model.to(device))
        if not model.auxiliary_enabled and r.auxiliary:
            log.warning("auxiliary head disabled: %s", model.auxiliary_note)
        self.opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay,
                                   nesterov=r.nesterov)
        self.sched = lr_schedule(self.opt, r)

    def _make_stream(self, *args, **kwargs):
        return make_stream(*args, **kwargs)

    def resume(self, run: RunFolder, config: dict, progress: dict) -> tuple[int, float]:
        """Restore the checkpoint, if any; the first epoch to run and the seconds already spent."""
        ckpt = self._checkpoint(run, config)
        self._restore(ckpt)
        if ckpt is None:
            return 0, 0.0
        progress["epoch"] = ckpt["epoch"]
        log.info("resuming %s after epoch %d (of %d)", run.path, ckpt["epoch"] + 1, self.recipe.epochs)
        return ckpt["epoch"] + 1, float(ckpt["elapsed"])

    def _checkpoint(self, run: RunFolder, config: dict) -> Optional[dict]:
        return run.load_checkpoint(config, CHECKPOINT_SCHEMA)

    def _restore(self, ckpt: Optional[dict]) -> None:
        """Load a checkpoint's model, optimiser, schedule, stream and random state (nothing when there is none)."""
        if ckpt is None:
            return
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.stream.load_state_dict(ckpt["stream"])
        set_rng_state(ckpt["rng"], self.device)  # drop path draws its masks on the device: CUDA's state too
        NOISE.load_state_dict(ckpt.get("noise") or NOISE.state_dict())

    def epoch(self, epoch: int) -> dict:
        """Train one epoch and test; the metrics row."""
        r, model = self.recipe, self.model
        t0 = time.time()
        lr = self.sched.get_last_lr()[0]
        model.drop_path_prob = r.drop_path_prob * epoch / r.epochs
        train_loss, train_acc, n = self._train(epoch, lr)
        self.sched.step()
        test_loss, test_acc, top5 = self._test()
        seconds = time.time() - t0
        return {"epoch": epoch, "lr": lr, "drop_path_prob": model.drop_path_prob, "train_loss": train_loss,
                "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc, "test_acc_top5": top5,
                "seconds": seconds, "images_per_s": n / seconds}

    def _train(self, epoch: int, lr: float) -> tuple[float, float, int]:
        return _train_epoch(self.model, self.stream, self.opt, self.recipe, lr, self.numerics)

    def _test(self) -> tuple[float, float, Optional[float]]:
        data = self.data
        return evaluate_topk(self.model, data.test, None, self.recipe.eval_batch_size, data.mean, data.std,
                             self.device, k=5, numerics=self.numerics)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "stream": self.stream.state_dict(),
                "rng": rng_state(self.device), "noise": NOISE.state_dict()}


class _RankTraining(_Training):
    """One torchrun rank's retraining: its slice of every global batch, the network in DDP, sums over the ranks.

    Everything rank-independent (weights, optimiser, schedule, stream position) is the same on every rank
    and checkpointed once; the random draws of training (drop path, noise) differ per rank and are
    checkpointed per rank. See docs/multi-gpu.md.
    """

    def __init__(self, cfg: NasrunConf, genotype: Genotype, device: torch.device, job: Job) -> None:
        self.job, self.seed = job, cfg.seed
        super().__init__(cfg, genotype, device)
        if cfg.recipe.sync_bn:
            distributed.sync_batchnorm(self.model, device)
            self.numerics.prepare(self.model)  # the new BatchNorms in fp32 too
        self.ddp = distributed.data_parallel(self.model, device)

    def _make_stream(self, *args, **kwargs):
        return make_shard_stream(self.job.rank, self.job.world, *args, **kwargs)

    def _checkpoint(self, run: RunFolder, config: dict) -> Optional[dict]:
        """Rank 0 reads and checks the checkpoint and sends it to the others (no shared file system needed)."""
        return self.job.share(super()._checkpoint(run, config) if self.job.rank == 0 else None)

    def _restore(self, ckpt: Optional[dict]) -> None:
        """The checkpoint, then this rank's own random state: saved by a job of this size, else drawn afresh."""
        super()._restore(ckpt)
        ranks = (ckpt or {}).get("ranks")
        if isinstance(ranks, list) and len(ranks) == self.job.world:
            mine = ranks[self.job.rank]
            set_rng_state(mine["rng"], self.device)
            NOISE.load_state_dict(mine["noise"])
        elif self.job.rank > 0:
            reseed_rank(self.seed, self.job.rank, 0 if ckpt is None else ckpt["epoch"] + 1)

    def _train(self, epoch: int, lr: float) -> tuple[float, float, int]:
        return _train_epoch_ranks(self.ddp, self.stream, self.opt, self.recipe, lr, self.job, epoch, self.numerics)

    def _test(self) -> tuple[float, float, Optional[float]]:
        """Rank 0's BN statistics to every rank, then each rank tests its share of the test set: the sums are
        one process's test of these weights."""
        data = self.data

        def share(lo: int, hi: int) -> list[float]:
            return list(evaluate_topk(self.model, data.test, torch.arange(lo, hi), self.recipe.eval_batch_size,
                                      data.mean, data.std, self.device, k=5, numerics=self.numerics))

        loss, acc, top5 = evaluate_shares(self.job, self.model, len(data.test), share)
        return loss, acc, top5

    def state_dict(self) -> dict:
        """One process's state (rank 0's random state), plus every rank's random state and the job's size."""
        state = super().state_dict()
        state["ranks"] = self.job.gather({"rng": state["rng"], "noise": state["noise"]})
        state["world_size"] = self.job.world
        return state


def _forward(model: nn.Module, x: torch.Tensor, numerics: Numerics) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Logits and auxiliary logits (None without the head) in fp32, the forward in the run's precision."""
    with numerics.autocast(x.device):
        logits, aux = model(numerics.inputs(x))
    return upcast(logits), None if aux is None else upcast(aux)


def _train_epoch(model, stream, opt, r, lr: float, numerics: Numerics = FP32) -> tuple[float, float, int]:
    """One pass of the training stream (cross-entropy, + the auxiliary head's weighted loss; both with
    recipe.label_smoothing, as DARTS' ImageNet training smooths both)."""
    model.train()
    loss_sum, correct, n = 0.0, 0, 0
    for _ in range(stream.batches_per_pass):
        x, y = next(stream)
        logits, aux = _forward(model, x, numerics)
        loss = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing)
        if aux is not None:
            loss = loss + r.auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=r.label_smoothing)
        value = sgd_step(loss, opt, list(model.parameters()), r.grad_clip, lr)
        loss_sum += value * len(y)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return loss_sum / max(n, 1), correct / max(n, 1), n


def _train_epoch_ranks(ddp, stream, opt, r, lr: float, job: Job, epoch: int,
                       numerics: Numerics = FP32) -> tuple[float, float, int]:
    """:func:`_train_epoch` on this rank's slices, the same global step as one process.

    Each rank's loss is its slice's summed loss times world/B (B: the global batch): DDP averages the
    ranks' gradients, which makes the global batch's mean-loss gradient even for a short last batch split
    unevenly. The returned figures are summed over the ranks.
    """
    ddp.train()
    params = list(ddp.parameters())
    loss_sum, correct, n = 0.0, 0, 0
    for step in range(stream.batches_per_pass):
        job.injected_failure(epoch, step)
        x, y = next(stream)
        scale = job.world / stream.global_batch
        logits, aux = _forward(ddp, x, numerics)
        loss = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing, reduction="sum")
        if aux is not None:
            loss = loss + r.auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=r.label_smoothing,
                                                               reduction="sum")
        loss_sum += sgd_step(loss * scale, opt, params, r.grad_clip, lr) / scale
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    loss_sum, correct, n = job.sum([loss_sum, correct, n])
    return loss_sum / max(n, 1), correct / max(n, 1), int(n)


def _finish(model, genotype, run_folder, unified, network, data, device, cfg, config, run: RunFolder,
            wall: float, world_size: int = 1) -> dict:
    rows = run.rows(METRICS)
    last_row = rows[-1] if rows else {}
    atomic_torch_save({"model": model.state_dict(), "genotype": genotype.to_dict(), "config": config},
                      run.path / "model.pt")
    result = run.write_result(
        "completed",
        command="retrain",
        genotype_source=cfg.genotype,
        search_run=str(run_folder) if run_folder else None,
        unified_from_search=unified,
        dataset=cfg.dataset.name,
        seed=cfg.seed,
        epochs=cfg.recipe.epochs,
        test_acc=last_row.get("test_acc"),
        test_error=None if last_row.get("test_acc") is None else 1.0 - last_row["test_acc"],
        test_acc_top5=last_row.get("test_acc_top5"),
        train_acc=last_row.get("train_acc"),
        **network,
        genotype=genotype.to_dict(),
        wall_seconds=wall,
        world_size=world_size,
        data=data.info,
        environment=environment(device),
        **Numerics.of(cfg).record(),
        config=config,
    )
    log.info("retrain finished: test accuracy %.4f -> %s", result["test_acc"], run.path)
    return result
