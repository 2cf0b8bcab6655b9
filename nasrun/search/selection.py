"""The tuning epochs of a selection that trains the supernet between its decisions (DARTS-PT's), and the
reading of the final genotype by a released method's own rule (``selection.rule``: GDAS' pairs, FairDARTS'
threshold; :func:`read_final`).

After the search's last epoch the search loop hands its state here. The weights' SGD restarts at
``search.lr / selection.lr_divisor``; at the start of the epochs the plan names, the selection takes its
decisions (scored in train mode on the search-val split, as released); every tuning epoch is then a
search epoch under the projected mixing weights (an architecture step, then a weight step). Each
epoch appends a row to ``selection.jsonl`` and writes the checkpoint, which holds the decisions and the
selection's own generator, so an interrupted selection resumes exactly where it stopped.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Generator, Optional

import torch

from nasrun.methods import make_selection
from nasrun.methods.schedules import EpochPlan
from nasrun.methods.selections import Projection, ProjectedMap, Scorer
from nasrun.run.folder import RunFolder
from nasrun.spaces.rules import EmptyCell, read_by_rule
from nasrun.supernet.projection import kinds_of
from nasrun.train.steps import evaluate, evaluate_topk

log = logging.getLogger(__name__)

SELECTION = "selection.jsonl"


def tuning_epochs(state: Any, run: RunFolder, data: Any, val_idx: torch.Tensor, config: dict, started: Any,
                  train_epoch: Callable[[Any, EpochPlan, float], dict],
                  lookup: Callable[[Any], dict]) -> Generator[int, None, None]:
    """Run (or resume) the selection's decisions and tuning epochs on ``state``; yield after each checkpoint.
    ``train_epoch`` is the search loop's (an epoch of architecture and weight steps); ``lookup`` gives a
    genotype's benchmark columns (empty without a table)."""
    cfg = state.cfg
    selection = make_selection(cfg.selection)
    model = state.model
    saved = state.selection
    projection = Projection(kinds_of(model))
    generator = torch.Generator(device="cpu")
    generator.manual_seed(cfg.seed * 1000 + 4)  # the order of the edges: a stream of its own
    argmax = model.genotype().to_dict() if saved is None else saved["argmax_genotype"]
    if saved is not None:
        projection.load_state_dict(saved["projection"])
        generator.set_state(saved["generator"].to("cpu", torch.uint8))
    model.alpha_map = ProjectedMap(state.alpha_map, projection)
    plan = selection.plan(model)
    _restart_weight_optimizer(state, plan.tune_epochs, resumed=saved is not None)
    if state.schedule.stages[state.stage].skip_dropout > 0:
        model.set_skip_dropout(0.0)
    start = 0 if saved is None else int(saved["epoch"])
    run.truncate(SELECTION, start)
    score = _scorer(state, data, val_idx)
    last = state.schedule.epochs - 1  # the ramps and temperatures stay where the search ended
    log.info("selection %s: %d decisions over %d tuning epochs", cfg.selection.name,
             plan.op_decisions + plan.node_decisions, plan.tune_epochs)
    for epoch in range(start, plan.tune_epochs):
        t0 = time.time()
        decisions = [d for k in plan.at(epoch) for d in selection.decide(k, plan, model, projection, score, generator)]
        for d in decisions:
            log.info("selection epoch %d: %s", epoch + 1, _said(d))
        lr = state.lr_schedule.get_last_lr()[0]
        stats = train_epoch(state, EpochPlan(state.schedule.total_epochs + epoch, state.stage, last, True, 0.0), lr)
        state.lr_schedule.step()
        val_loss, val_acc = evaluate(model, data.train, val_idx, cfg.search.eval_batch_size, data.mean, data.std,
                                     state.device, numerics=state.numerics)
        genotype = model.genotype()
        run.append(SELECTION, {"epoch": epoch, "lr": lr, **stats, "val_loss": val_loss, "val_acc": val_acc,
                               "skip_normal": genotype.count("skip_connect", "normal"),
                               "skip_reduce": genotype.count("skip_connect", "reduce"), **lookup(genotype),
                               "decisions": decisions, "genotype": genotype.to_dict(),
                               "seconds": time.time() - t0})
        state.selection = {"epoch": epoch + 1, "projection": projection.state_dict(),
                           "generator": generator.get_state(), "argmax_genotype": argmax}
        run.save_checkpoint({"config": config, **state.state_dict(), "elapsed": state.elapsed + started.seconds()})
        log.info("selection epoch %d/%d  train_loss %.4f  val_acc %.4f", epoch + 1, plan.tune_epochs,
                 stats["train_loss"], val_acc)
        with started.paused():
            yield state.schedule.total_epochs + epoch


def outcome(run: RunFolder, state: Any) -> tuple[dict, dict]:
    """What result.json says after a selection: its record (the genotype the search's own rule gave, the
    decisions in the order they were taken) and the last tuning epoch's accuracies, skip counts and benchmark
    columns, which are of the selected genotype and replace the search's in ``final``."""
    rows = run.rows(SELECTION)
    keep = ("val_acc", "val_loss", "train_acc", "skip_normal", "skip_reduce")
    final = {k: v for k, v in rows[-1].items() if k in keep or k.startswith("bench_")} if rows else {}
    record = {"name": state.cfg.selection.name, "argmax_genotype": state.selection["argmax_genotype"],
              "tuning_epochs": len(rows), "decisions": [d for row in rows for d in row["decisions"]]}
    return record, final


def read_final(state: Any, genotype: Any, folder: Any) -> tuple[Any, Optional[dict], dict]:
    """The final genotype under ``selection.rule``, the record result.json keeps of the reading (None under the
    space's rule, which ``genotype`` already is) and the skip counts of ``final``, which are the ruled genotype's.
    A threshold that leaves a cell without an edge ends the run with one line saying how to read it again."""
    conf = state.cfg.selection
    if conf.rule == "space":
        return genotype, None, {}
    model = state.model
    with torch.no_grad():
        weights = model.vocabulary_weights()
    try:
        ruled = read_by_rule(model.space, weights, model.edge_ops, model.layers, conf.rule, conf.threshold)
    except EmptyCell as exc:
        raise EmptyCell(f"selection.threshold={conf.threshold}: {exc}; the supernet is kept: read it again with "
                        f"`nasrun select genotype={folder} selection.threshold=<lower>` (or selection.rule=space)") \
            from None
    log.info("genotype read by rule %s: %s", conf.rule, ruled)
    record = {"name": conf.name, "rule": conf.rule, **({"threshold": conf.threshold} if conf.rule == "threshold"
                                                         else {}), "space_genotype": genotype.to_dict()}
    final = {"skip_normal": ruled.count("skip_connect", "normal"), "skip_reduce": ruled.count("skip_connect", "reduce")}
    return ruled, record, final


def _restart_weight_optimizer(state: Any, tune_epochs: int, resumed: bool) -> None:
    """A fresh SGD at ``search.lr / lr_divisor`` (as released) and its schedule; on resume, their saved state."""
    s, conf = state.cfg.search, state.cfg.selection
    lr = s.lr / conf.lr_divisor
    opt = torch.optim.SGD(state.model.weight_parameters(), lr=lr, momentum=s.momentum, weight_decay=s.weight_decay,
                          nesterov=s.nesterov)
    floor = s.lr_min if conf.lr_schedule == "cosine" else lr  # a cosine from lr to lr is exactly constant
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tune_epochs, eta_min=floor)
    if resumed:  # the checkpoint's optimizer and schedule are the tuning ones already
        opt.load_state_dict(state.w_opt.state_dict())
        schedule.load_state_dict(state.lr_schedule.state_dict())
    state.w_opt, state.lr_schedule = opt, schedule


def _scorer(state: Any, data: Any, val_idx: torch.Tensor) -> Scorer:
    """Accuracy and loss under given mixing weights on the scoring images, in train mode (batch statistics),
    as released (``infer(_eval=False)``; BatchNorm's running statistics move as they do there)."""
    conf = state.cfg.selection
    idx = val_idx if conf.eval_images is None else val_idx[: conf.eval_images]

    def score(mix: dict) -> tuple[float, float]:
        loss, acc, _ = evaluate_topk(state.model, data.train, idx, state.cfg.search.eval_batch_size, data.mean,
                                     data.std, state.device, k=None, numerics=state.numerics, mix=mix,
                                     batch_stats=True)
        return acc, loss

    return score


def _said(decision: dict) -> str:
    if decision["decide"] == "op":
        return f"{decision['kind']} edge {decision['edge']} keeps {decision['op']}"
    return f"{decision['kind']} node {decision['node']} keeps edges {decision['kept']}"


__all__ = ["tuning_epochs", "outcome", "read_final", "SELECTION"]
