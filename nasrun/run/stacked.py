"""The stacked population engine: the members' supernets as one network, one forward and backward per step.

Under ``hydra.launcher.engine=stacked`` the members of a population train in lockstep. Every step, each
member draws its own batches from its own streams, and one :class:`~nasrun.supernet.stacked.StackedSuperNet`
(member m's channels in group m of every convolution) computes all their losses at once: the architecture
step's gradient of each member's validation loss with respect to its own alphas, then the weight step's
backward of the sum of the members' training losses, whose gradient with respect to member m's weights is
member m's own. Each member then clips and steps with its own optimisers (so its learning rate, momentum,
decay, clipping and Adam are its own), in place on the stacked weights its supernet's weights are views of.

Everything else of an epoch (the learning-rate step, the evaluation, the metrics, genotype and checkpoint)
is the member's own search loop, run member by member (``nasrun.search.loop``); this module only replaces
the member's training pass, through the loop's ``trainer`` hook. A member is its solo run up to rounding: the
stacked convolutions sum in another order than a solo one, so float64 members agree with their solo runs to
about 1e-12, not bit for bit (the turn-taking engine is bit for bit).

What can be stacked (:func:`nasrun.methods.stacking.unstackable` says why not): DARTS (first and second order)
and Amended-DARTS on softmax mixing weights, with SDARTS' perturbation of the weight step or without, with
PC-DARTS' partial channels and edge normalisation or without, one stage, the architecture step first, on
shared cells of the DARTS or NB201 ops, without auxiliary skip or skip dropout, in fp32 or fp64. A member's
perturbation noise comes from its own random state (``draw_as_each``), so it is its solo run's.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from nasrun.methods.stacking import stacked_grads, stacked_pgd, weight_step_draw
from nasrun.run.rng import OwnRandom, draw_as_each


class Lockstep:
    """Trains the members it is given together; each member's loop fetches its epoch's statistics from here.

    ``hook(i)`` is member i's ``trainer`` for :func:`nasrun.search.loop.search_epochs`: its ``ready`` receives
    the member's state once the member is set up (or resumed), its ``train`` returns (or raises) what the last
    :meth:`run_epoch` computed for the member.
    """

    def __init__(self) -> None:
        self.states: dict[int, Any] = {}
        self.data: dict[int, tuple] = {}  # each member's dataset and search-val indices
        self.done: dict[int, Any] = {}
        self.scores: dict[int, tuple[float, float]] = {}
        self._net: Any = None  # the last epoch's stacked network, kept while its members stay linked to it

    def hook(self, i: int) -> "_MemberHook":
        return _MemberHook(self, i)

    def run_epoch(self, members: list[int], randoms: Sequence[OwnRandom]) -> None:
        """The next epoch of every member given, members at the same epoch together; ``randoms[i]``: the random
        state member i draws its perturbations from."""
        by_epoch: dict[int, list[int]] = {}
        for i in members:
            state = self.states[i]
            if state.epoch < state.schedule.total_epochs:
                by_epoch.setdefault(state.epoch, []).append(i)
        for group in by_epoch.values():
            started = time.perf_counter()
            live = {i: self.states[i] for i in group}
            done, net, trained = _stacked_epoch(live, randoms, self._linked(live))
            if trained:
                self._net = net
                self.scores.update(_stacked_evaluation(net, trained, {i: self.data[i] for i in trained}))
            share = (time.perf_counter() - started) / len(group)  # each member's part of the shared work
            for stats in done.values():
                if isinstance(stats, dict):
                    stats["train_seconds"] = share
            self.done.update(done)

    def _linked(self, live: dict[int, Any]) -> Any:
        """The kept stacked network when these members, in this order, are still views into it (linking again
        costs a network build per epoch); else None."""
        models = [s.model for s in live.values()]
        return self._net if self._net is not None and self._net.links(models) else None


class _MemberHook:
    plain = True  # members are built as plain supernets: the stacked network links their weights

    def __init__(self, lockstep: Lockstep, i: int) -> None:
        self.lockstep, self.i = lockstep, i

    def ready(self, state: Any, data: Any, val_idx: torch.Tensor) -> None:
        self.lockstep.states[self.i] = state
        self.lockstep.data[self.i] = (data, val_idx)
        for group in state.w_opt.param_groups:  # one kernel call per update for all of a member's weights, on
            group["foreach"] = True             # every device (the same arithmetic as the per-weight loop)

    def evaluated(self, state: Any) -> tuple[float, float]:
        return self.lockstep.scores.pop(self.i)

    def train(self, state: Any, plan: Any, lr: float) -> dict:
        outcome = self.lockstep.done.pop(self.i)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _stacked_epoch(states: dict[int, Any], randoms: Sequence[OwnRandom], net: Any = None
                   ) -> tuple[dict[int, Any], Any, dict[int, Any]]:
    """One epoch of the members in ``states`` (``net``: their stacked network, if one is already linked): per
    member its statistics or the exception that ended it, and the stacked network of the members still live at
    its end (with their states)."""
    from nasrun.search.loop import _Totals

    out: dict[int, Any] = {}
    live = dict(states)
    totals = {i: _Totals() for i in live}
    plans = {i: s.schedule.plan(s.epoch) for i, s in live.items()}
    lrs = {i: s.lr_schedule.get_last_lr()[0] for i, s in live.items()}
    for i, s in live.items():
        s.model.train()
        s.alpha_map.begin_epoch(plans[i].stage_epoch, s.schedule.epochs)
    steps = {s.train_stream.batches_per_pass for s in live.values()}
    if len(steps) != 1:
        raise RuntimeError(f"stacked members differ in steps per epoch: {sorted(steps)}")
    random_before = torch.random.get_rng_state()
    net = net if net is not None else _link(live)
    net.train()
    for _ in range(steps.pop()):
        for s in live.values():
            s.alpha_map.begin_step()
        batches = {i: (next(s.train_stream), next(s.val_stream)) for i, s in live.items()}
        train, val = _inputs(live, batches, 0), _inputs(live, batches, 1)
        arch = [i for i in live if plans[i].arch_active]
        if arch:
            _arch_step(net, live, arch, batches, train, val, totals, lrs)
        mix = _weight_mix(net, live, plans, batches, train, randoms)
        failed = _weight_step(net, live, batches, train, totals, lrs, mix)
        if failed:
            out.update(failed)
            live = {i: s for i, s in live.items() if i not in failed}
            if not live:
                return out, None, live
            net = _link(live)
    if not torch.equal(random_before, torch.random.get_rng_state()):
        raise RuntimeError("a stacked epoch drew from the process's random generator; its members are not their "
                           "solo runs (run them with hydra.launcher.engine=turns)")
    out.update({i: totals[i].summary() for i in live})
    return out, net, live


@torch.no_grad()
def _stacked_evaluation(net: Any, live: dict[int, Any], data: dict[int, tuple]) -> dict[int, tuple[float, float]]:
    """Each member's loss and accuracy on its search-val images in eval mode, batch by batch as
    :func:`nasrun.train.steps.evaluate_topk` takes them (its loop for one model), all members in one forward per
    batch of ``net``, the epoch's stacked network."""
    from nasrun.data.loaders import eval_batches
    from nasrun.supernet.stacked import stack_inputs

    first = next(iter(live.values()))
    net.eval()
    streams = [eval_batches(d.train, idx, s.cfg.search.eval_batch_size, d.mean, d.std, s.device)
               for s, (d, idx) in ((live[i], data[i]) for i in live)]
    mix, edges = _mix(live), _edges(live)
    sums = [[0.0, 0, 0] for _ in live]
    for batches in zip(*streams):
        x = torch.stack([first.numerics.inputs(b[0]) for b in batches])
        logits = net(stack_inputs(x), mix, edges)
        for j, (_, y) in enumerate(batches):
            sums[j][0] += float(F.cross_entropy(logits[:, j], y, reduction="sum"))
            sums[j][1] += int((logits[:, j].argmax(1) == y).sum())
            sums[j][2] += len(y)
    return {i: (loss / max(n, 1), correct / max(n, 1)) for i, (loss, correct, n) in zip(live, sums)}


def _link(live: dict[int, Any]) -> Any:
    """The stacked network of the live members; its modules' own initialisation (overwritten by the members'
    weights at once) must not move the process's generator."""
    from nasrun.supernet.stacked import StackedSuperNet

    with torch.random.fork_rng(devices=[]):
        return StackedSuperNet.linked([s.model for s in live.values()])


def _inputs(live: dict[int, Any], batches: dict, which: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The members' images stacked along channels and their labels ``(N, S)``."""
    from nasrun.supernet.stacked import stack_inputs

    xs = torch.stack([live[i].numerics.inputs(batches[i][which][0]) for i in live])
    ys = torch.stack([batches[i][which][1] for i in live], dim=1)
    return stack_inputs(xs), ys


def _mix(live: dict[int, Any]) -> dict[str, torch.Tensor]:
    """Every member's softmax mixing weights, stacked ``(S, num_edges, ops)`` per kind (through its alphas)."""
    models = [s.model for s in live.values()]
    return {k: F.softmax(torch.stack([m.alphas(k) for m in models]), dim=-1) for k in models[0].kinds}


def _edges(live: dict[int, Any]) -> Optional[dict[str, torch.Tensor]]:
    """Every member's edge weights (PC-DARTS' edge normalisation), stacked ``(S, num_edges)`` per kind, or None."""
    models = [s.model for s in live.values()]
    if not models[0].edge_norm:
        return None
    rows = [m.edge_weights() for m in models]
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def _losses(net: Any, live: dict[int, Any], x: torch.Tensor, y: torch.Tensor, detach_alphas: bool = False):
    """Each member's mean cross-entropy ``(S,)`` and the logits ``(N, S, K)`` under its softmax weights."""
    mix, edges = _mix(live), _edges(live)
    if detach_alphas:
        mix, edges = _detached(mix), _detached(edges)
    return _losses_under(net, mix, x, y, edges)


def _detached(weights: Optional[dict[str, torch.Tensor]]) -> Optional[dict[str, torch.Tensor]]:
    return None if weights is None else {k: v.detach() for k, v in weights.items()}


def _losses_under(net: Any, mix: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                  edges: Optional[dict[str, torch.Tensor]]):
    """Each member's mean cross-entropy ``(S,)`` and the logits ``(N, S, K)`` under the stacked weights ``mix``
    (and edge weights ``edges``)."""
    from nasrun.supernet.stacked import member_losses

    logits = net(x, mix, edges)
    return member_losses(logits, y), logits


def _weight_mix(net: Any, live: dict[int, Any], plans: dict, batches: dict, train: tuple,
                randoms: Sequence[OwnRandom]) -> Optional[dict[str, torch.Tensor]]:
    """The stacked mixing weights the weight step trains under: None for the clean ones (no perturbation), each
    member's own SDARTS-RS draw, or SDARTS-ADV's attack for every member at once. A member's noise comes from its
    own random state, in the order its solo step draws it."""
    from nasrun.methods.perturbations import epsilon_at

    states = list(live.items())
    confs = [s.cfg.perturbation for _, s in states]
    draw = weight_step_draw(confs)
    if draw == "clean":
        return None
    epochs = [(plans[i].stage_epoch, s.schedule.epochs) for i, s in states]
    if draw == "own":  # SDARTS-RS: each member's own perturbation, drawn as in its solo step
        def own_draw(j: int) -> dict:
            i, s = states[j]
            return s.perturbation(s.model, *batches[i][0], *epochs[j])

        mixes = draw_as_each([(randoms[i], s.cfg) for i, s in states], own_draw)
        return {k: torch.stack([m[k].detach() for m in mixes]) for k in mixes[0]}
    return _attack(net, live, [epsilon_at(c, *e) for c, e in zip(confs, epochs)], train, randoms)


def _attack(net: Any, live: dict[int, Any], eps: list[float], train: tuple, randoms: Sequence[OwnRandom]
            ) -> dict[str, torch.Tensor]:
    """SDARTS-ADV's weights for every member: its random start from its own state, then the stacked attack with
    each member's radius ``eps[j]`` on its training batch."""
    from nasrun.methods.perturbations import back_on_simplex, uniform_noise

    states = list(live.items())
    confs = [s.cfg.perturbation for _, s in states]
    shared = {(c.pgd_steps, c.pgd_random_start, c.simplex) for c in confs}
    if len(shared) != 1:
        raise ValueError(f"stacked SDARTS-ADV members differ in pgd_steps, pgd_random_start or simplex: {shared}")
    steps, simplex = confs[0].pgd_steps, confs[0].simplex
    clean = _detached(_mix(live))
    rows = {"dtype": torch.float64, "device": next(iter(clean.values())).device}
    radius = torch.tensor(eps, **rows).view(-1, 1, 1)
    step = torch.tensor([2 * e / steps if c.pgd_step_size is None else c.pgd_step_size for e, c in zip(eps, confs)],
                        **rows).view(-1, 1, 1)
    start = {k: v.clone() for k, v in clean.items()}
    if confs[0].pgd_random_start:
        noise = draw_as_each([(randoms[i], s.cfg) for i, s in states],
                             lambda j: {k: uniform_noise(v[j], eps[j]) for k, v in clean.items()})
        start = {k: back_on_simplex(v + torch.stack([n[k] for n in noise]), v, radius, simplex)
                 for k, v in clean.items()}
    x, y = train
    edges = _detached(_edges(live))
    net.eval()
    try:
        return stacked_pgd(lambda m: _losses_under(net, m, x, y, edges)[0], clean, start, radius, step, steps,
                           simplex)
    finally:
        net.train()


def _checked(live: dict[int, Any], losses: torch.Tensor, lrs: dict) -> tuple[dict[int, float], dict[int, Exception]]:
    """Each member's training loss as a number, and the members whose loss is not finite with the error their solo
    step raises."""
    from nasrun.train.steps import checked

    values, failed = {}, {}
    for j, i in enumerate(live):
        try:
            values[i] = checked(losses[j], lrs[i])
        except Exception as exc:  # noqa: BLE001 - this member's failure, recorded by its own loop
            failed[i] = exc
    return values, failed


def _arch_step(net: Any, live: dict[int, Any], arch: list[int], batches: dict, train: tuple, val: tuple,
               totals: dict, lrs: dict) -> None:
    """Each member's architecture step on its validation batch (first order, or Amended-DARTS' products on
    its training batch), members past their warm-up."""
    from nasrun.methods.estimators import ArchGrad, apply_arch_step

    alphas = [live[i].model.arch_parameters() for i in live]
    grads, stats, losses, logits = stacked_grads(
        net, [(s.model, s.w_opt) for s in live.values()], alphas, [s.cfg.estimator for s in live.values()],
        [lrs[i] for i in live], lambda: _losses(net, live, *val), lambda: _losses(net, live, *train))
    for j, (i, s) in enumerate(live.items()):
        if i not in arch:
            continue
        yv = batches[i][1][1]
        correct = int((logits[:, j].argmax(1) == yv).sum())
        step = ArchGrad(grads[j], float(losses[j].detach()), correct, stats[j])
        for key, value in step.stats.items():
            totals[i].arch_stats.setdefault(key, []).append(value)
        apply_arch_step(s.model, step, s.a_opt, s.estimator, s.cfg.search.arch_grad_clip)
        totals[i].arch_loss += step.val_loss * len(yv)
        totals[i].arch_correct += correct
        totals[i].arch_n += len(yv)


def _weight_step(net: Any, live: dict[int, Any], batches: dict, train: tuple, totals: dict, lrs: dict,
                 mix: Optional[dict[str, torch.Tensor]]) -> dict:
    """Each member's weight step on its training batch under ``mix`` (None: the clean softmax weights): one
    backward, then its own clip and SGD step."""
    x, y = train
    for s in live.values():
        for p in s.model.arch_parameters():  # as a solo weight step leaves them: no gradient
            p.grad = None
    net.zero_member_grads()  # the members' weight gradients are views into the stacked ones
    if mix is None:
        losses, logits = _losses(net, live, x, y, detach_alphas=True)
    else:
        losses, logits = _losses_under(net, mix, x, y, _detached(_edges(live)))
    values, failed = _checked(live, losses, lrs)
    keep = torch.tensor([i not in failed for i in live], dtype=losses.dtype, device=losses.device)
    (losses * keep).sum().backward()
    for j, (i, s) in enumerate(live.items()):
        if i in failed:
            continue
        params = s.model.weight_parameters()
        if s.cfg.search.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, s.cfg.search.grad_clip, foreach=True)
        s.w_opt.step()
        yi = batches[i][0][1]
        totals[i].loss += values[i] * len(yi)
        totals[i].correct += int((logits[:, j].argmax(1) == yi).sum())
        totals[i].n += len(yi)
    return failed


__all__ = ["Lockstep"]
