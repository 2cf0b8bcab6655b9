"""The options a stacked population implements, and their architecture gradients for all members at once.

A stacked population (``hydra.launcher.engine=stacked``, :mod:`nasrun.run.stacked`) computes every member's
losses in one network whose weights are the members' weights side by side (member m's block of every stacked
weight). Its Hessian is block-diagonal over the members, so a product of the sum of the members' losses with
a stacked direction is every member's own product at once. Here, for DARTS and Amended-DARTS:

- first order: the gradient of each member's validation loss with respect to its alphas;
- second order: each member's virtual SGD step on its own blocks, then its ``B v'``
  (:func:`stacked_unrolled_grads`);
- Amended-DARTS: ``g1 - eta * B (H v)``, each member with its own eta and radius. Exactly (double backward
  of the summed training loss: ``H v`` and ``B u`` blockwise), or by the reference's central differences,
  where each member's step ``epsilon_m = r_m / ||direction_m||`` moves only its own block;
- SDARTS-ADV's attack on the weight step's mixing weights (:func:`stacked_pgd`), each member with its own radius.

SDARTS-RS needs nothing stacked: each member draws its own noise. The options listed in :data:`STACKED` are the
ones a stacked population runs; any other is refused by name.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from nasrun.config import options as o
from nasrun.methods.estimators import preserved_buffers
from nasrun.spaces.names import DARTS_OPS
from nasrun.spaces.ops import NB201_OPS

#: The options (by schema) a stacked population runs; a selection must not tune (``selection.tunes``).
STACKED = {o.FirstOrderConf, o.SecondOrderConf, o.AmendedConf, o.NoPerturbationConf, o.RandomConf,
           o.AdversarialConf, o.SoftmaxConf, o.SingleConf}

#: ``losses()``: each member's mean cross-entropy ``(S,)`` on its batch (through its alphas), with the logits.
Losses = Callable[[], tuple[Tensor, Tensor]]


def unstackable(cfg: Any) -> Optional[str]:
    """Why a member with this config cannot be stacked (None: it can)."""
    from nasrun.spaces.space import Space

    space, net, s = Space(cfg.space), cfg.supernet, cfg.search
    axes = [(type(getattr(cfg, axis)) not in STACKED, f"{axis}={getattr(cfg, axis).name}")
            for axis in ("estimator", "perturbation", "alpha_map", "schedule")]
    reasons = axes + [
        (cfg.selection.tunes, f"selection={cfg.selection.name} (a selection without tuning epochs only)"),
        (s.order != "arch_first" or s.clip_with_alphas, "search.order=weight_first or search.clip_with_alphas"),
        (space.sharing != "shared", f"space={space.name} (shared cells only)"),
        (any(op not in DARTS_OPS + NB201_OPS for op in space.ops), f"space={space.name}'s ops (the DARTS and NB201 "
                                                                    f"ops only)"),
        (net.aux_skip > 0 or any(p > 0 for p in net.skip_dropout), "supernet.aux_skip or supernet.skip_dropout"),
        (cfg.precision not in ("fp32", "fp64") or cfg.channels_last, f"precision={cfg.precision} or channels_last"),
        (s.compile != "off", f"search.compile={s.compile}"),
    ]
    why = [text for bad, text in reasons if bad]
    return "; ".join(why) if why else None


def check_stackable(cfg: Any, who: str) -> None:
    """One ConfigError line when the member ``who`` (its job's overrides or folder) cannot be stacked."""
    from nasrun.errors import ConfigError

    why = unstackable(cfg)
    if why is not None:
        raise ConfigError(f"hydra.launcher.engine=stacked is not allowed for {who}: it stacks DARTS (first and "
                          f"second order), Amended-DARTS, SDARTS and PC-DARTS on the DARTS and NB201 spaces, "
                          f"not {why}; use hydra.launcher.engine=turns")


def member_norms(net: Any, names: list[str], tensors: list[Tensor]) -> Tensor:
    """``(S,)``: each member's global norm of ``tensors``, shaped as ``net``'s stacked weights ``names``."""
    sums = sum(net.member_blocks(name, t.detach()).pow(2).flatten(1).sum(1) for name, t in zip(names, tensors))
    return sums.sqrt()


def stacked_arch_grads(net: Any, alphas: list[list[Tensor]], confs: list[Any], val: Losses, train: Losses
                       ) -> tuple[list[list[Tensor]], list[dict], Tensor, Tensor]:
    """Every member's architecture gradient and diagnostics, its validation losses ``(S,)`` and logits.

    ``alphas[m]``: member m's alphas (what ``val`` and ``train`` differentiate through); ``confs[m]``: its
    estimator option (first order or Amended-DARTS)."""
    from nasrun.methods.estimators import two_term_stats

    names, weights = map(list, zip(*net.named_weights()))
    flat = [a for own in alphas for a in own]
    losses, logits = val()
    amended = [getattr(c, "eta", 0.0) != 0 for c in confs]
    wrt = flat + (weights if any(amended) else [])
    grads = torch.autograd.grad(losses.sum(), wrt, allow_unused=True)
    g1, k = [], 0
    for own in alphas:
        g1.append([torch.zeros_like(a) if g is None else g for g, a in zip(grads[k:k + len(own)], own)])
        k += len(own)
    if not any(amended):
        return g1, [two_term_stats(g, None) for g in g1], losses, logits
    v = [torch.zeros_like(w) if g is None else g for g, w in zip(grads[len(flat):], weights)]
    z = _amended_products(net, names, weights, flat, v, confs, train)
    out, stats, k = [], [], 0
    for m, own in enumerate(alphas):
        if not amended[m]:
            out.append(g1[m])
            stats.append(two_term_stats(g1[m], None))
        else:
            second = [-confs[m].eta * zi for zi in z[k:k + len(own)]]
            out.append([g + t for g, t in zip(g1[m], second)])
            stats.append(two_term_stats(g1[m], second))
        k += len(own)
    return out, stats, losses, logits


def _amended_products(net: Any, names: list[str], weights: list[Tensor], alphas: list[Tensor], v: list[Tensor],
                      confs: list[Any], train: Losses) -> list[Tensor]:
    """Every member's ``B (H v)`` of its training loss at the current weights (its alphas' order)."""
    with preserved_buffers(net):
        if all(c.hvp == "exact" for c in confs if getattr(c, "eta", 0.0) != 0):
            loss = train()[0].sum()
            g = torch.autograd.grad(loss, weights, create_graph=True)
            u = torch.autograd.grad(g, weights, grad_outputs=v, retain_graph=True)
            out = torch.autograd.grad(g, alphas, grad_outputs=[ui.detach() for ui in u], allow_unused=True)
            return [torch.zeros_like(a) if o is None else o for o, a in zip(out, alphas)]
        if any(c.hvp == "exact" for c in confs if getattr(c, "eta", 0.0) != 0):
            raise ValueError("a stacked population's Amended-DARTS members share estimator.hvp")
        radius = torch.tensor([getattr(c, "fd_radius", 0.01) for c in confs], dtype=weights[0].dtype,
                              device=weights[0].device)
        saved = [w.detach().clone() for w in weights]
        try:
            diffs, eps = _central(net, names, weights, saved, v, radius, weights, train)
            u = [net.scale_blocks(name, d, 1 / (2 * eps)) for name, d in zip(names, diffs)]
            diffs, eps = _central(net, names, weights, saved, u, radius, alphas, train)
            per_member = len(alphas) // len(confs)
            return [d / (2 * eps[j // per_member]) for j, d in enumerate(diffs)]
        finally:
            with torch.no_grad():
                for w, c in zip(weights, saved):
                    w.copy_(c)


def _central(net: Any, names: list[str], weights: list[Tensor], center: list[Tensor], direction: list[Tensor],
             radius: Tensor, wrt: list[Tensor], train: Losses) -> tuple[list[Tensor], Tensor]:
    """``grad L(w + e u) - grad L(w - e u)`` for every member at once, with each member's ``e_m = r_m / ||u_m||``
    (the caller divides by ``2 e``). Leaves the weights perturbed; the caller restores them."""
    eps = radius / (member_norms(net, names, direction) + 1e-12)
    out = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for name, w, c, d in zip(names, weights, center, direction):
                w.copy_(net.scale_blocks(name, d, sign * eps).add_(c))
        g = torch.autograd.grad(train()[0].sum(), wrt, allow_unused=True)
        out.append([gi if gi is not None else torch.zeros_like(t) for gi, t in zip(g, wrt)])
    return [p - m for p, m in zip(*out)], eps


def stacked_grads(net: Any, members: list[tuple[Any, Any]], alphas: list[list[Tensor]], confs: list[Any],
                  lrs: list[float], val: Losses, train: Losses
                  ) -> tuple[list[list[Tensor]], list[dict], Tensor, Tensor]:
    """Every member's architecture gradient by its estimator option: :func:`stacked_unrolled_grads` for second-order
    DARTS, :func:`stacked_arch_grads` for first order and Amended-DARTS (the arguments are theirs)."""
    if any(type(c) is o.SecondOrderConf for c in confs):
        return stacked_unrolled_grads(net, members, alphas, confs, lrs, val, train)
    return stacked_arch_grads(net, alphas, confs, val, train)


#: How a stacked population gets each perturbation's weight-step weights: the clean ones, each member's own draw
#: as its solo step draws it, or the attack for every member at once (:func:`stacked_pgd`).
_DRAWS = {o.NoPerturbationConf: "clean", o.RandomConf: "own", o.AdversarialConf: "attack"}


def weight_step_draw(confs: list[Any]) -> str:
    """``clean``, ``own`` or ``attack`` (:data:`_DRAWS`) for the members' perturbation options, which must agree."""
    kinds = {type(c) for c in confs}
    if len(kinds) != 1:
        raise ValueError(f"stacked members differ in perturbation: {sorted(c.name for c in confs)}")
    return _DRAWS[kinds.pop()]


def stacked_unrolled_grads(net: Any, members: list[tuple[Any, Any]], alphas: list[list[Tensor]], confs: list[Any],
                           lrs: list[float], val: Losses, train: Losses
                           ) -> tuple[list[list[Tensor]], list[dict], Tensor, Tensor]:
    """Second-order DARTS (:class:`nasrun.methods.estimators.SecondOrder`) for every member at once.

    ``members[m]``: member m's supernet (its weights views into ``net``'s) and weight optimiser; ``lrs[m]``: its
    learning rate xi. Each member's virtual step is its own SGD step on its blocks (its momentum buffer and decay);
    the validation gradient at the unrolled weights and ``B v'`` around the current weights (central differences
    with each member's ``epsilon_m = r_m / ||v'_m||``, or exactly) are blockwise. Returns as
    :func:`stacked_arch_grads`, the validation losses and logits at the unrolled weights, as the solo estimator's."""
    from nasrun.methods.estimators import two_term_stats, virtual_step

    if any(type(c) is not o.SecondOrderConf for c in confs):
        raise ValueError("a stacked population's second-order members must all be second order")
    names, weights = map(list, zip(*net.named_weights()))
    flat = [a for own in alphas for a in own]
    saved = [w.detach().clone() for w in weights]
    with preserved_buffers(net):
        try:
            g = torch.autograd.grad(train()[0].sum(), weights, allow_unused=True)
            for m, (model, opt) in enumerate(members):
                own = dict(model.named_weight_parameters())
                virtual_step(opt, [own[n] for n in names], [net.member_tensor(n, c, m) for n, c in zip(names, saved)],
                             [None if gi is None else net.member_tensor(n, gi, m) for n, gi in zip(names, g)], lrs[m])
            losses, logits = val()
            grads = torch.autograd.grad(losses.sum(), flat + weights, allow_unused=True)
            v = [torch.zeros_like(w) if gi is None else gi for gi, w in zip(grads[len(flat):], weights)]
            mixed = _unrolled_mixed(net, names, weights, saved, flat, v, confs, train)
        finally:
            with torch.no_grad():
                for w, c in zip(weights, saved):
                    w.copy_(c)
    out, stats, k = [], [], 0
    for m, own in enumerate(alphas):
        direct = [torch.zeros_like(a) if gi is None else gi for gi, a in zip(grads[k:k + len(own)], own)]
        second = [-lrs[m] * x for x in mixed[k:k + len(own)]]
        out.append([d + t for d, t in zip(direct, second)])
        stats.append(two_term_stats(direct, second))
        k += len(own)
    return out, stats, losses, logits


def _unrolled_mixed(net: Any, names: list[str], weights: list[Tensor], saved: list[Tensor], alphas: list[Tensor],
                    v: list[Tensor], confs: list[Any], train: Losses) -> list[Tensor]:
    """Every member's ``B v'`` of its training loss around the current weights ``saved`` (its alphas' order)."""
    exact = {c.hvp == "exact" for c in confs}
    if len(exact) != 1:
        raise ValueError("a stacked population's second-order members share estimator.hvp")
    if exact.pop():
        with torch.no_grad():
            for w, c in zip(weights, saved):
                w.copy_(c)
        g = torch.autograd.grad(train()[0].sum(), weights, create_graph=True, allow_unused=True)
        pairs = [(gi, d.detach()) for gi, d in zip(g, v) if gi is not None and gi.requires_grad]
        out = torch.autograd.grad([gi for gi, _ in pairs], alphas, grad_outputs=[d for _, d in pairs],
                                  allow_unused=True)
        return [torch.zeros_like(a) if x is None else x for x, a in zip(out, alphas)]
    radius = torch.tensor([c.fd_radius for c in confs], dtype=weights[0].dtype, device=weights[0].device)
    diffs, eps = _central(net, names, weights, saved, v, radius, alphas, train)
    per_member = len(alphas) // len(confs)
    return [d / (2 * eps[j // per_member]) for j, d in enumerate(diffs)]


def stacked_pgd(losses_of: Callable[[dict[str, Tensor]], Tensor], clean: dict[str, Tensor], start: dict[str, Tensor],
                eps: Tensor, step: Tensor, steps: int, simplex: str) -> dict[str, Tensor]:
    """SDARTS-ADV's attack (:func:`nasrun.methods.perturbations.pgd_attack`) for every member at once.

    ``losses_of(mix)``: each member's loss ``(S,)`` under the stacked mixing weights ``mix`` (the network in eval
    mode); ``clean``, ``start``: the clean and the starting weights, ``(S, num_edges, ops)`` per kind; ``eps``,
    ``step``: each member's radius and step size, float64 ``(S, 1, 1)``. A member's loss depends on its own block of
    the weights only, so the gradient of the summed losses is each member's own; every other operation acts per
    row. A member whose attack did not raise its loss keeps its clean weights, as in the solo attack."""
    from nasrun.methods.perturbations import back_on_simplex

    with torch.no_grad():
        loss0 = losses_of(clean)
    mix, keys = dict(start), list(start)
    dtype = mix[keys[0]].dtype
    step_, eps_ = step.to(dtype), eps.to(dtype)  # what a Python number becomes in the solo attack's arithmetic
    for _ in range(steps):
        leaves = {k: mix[k].detach().requires_grad_(True) for k in keys}
        grads = torch.autograd.grad(losses_of(leaves).sum(), [leaves[k] for k in keys])
        with torch.no_grad():
            for k, g in zip(keys, grads):
                a = leaves[k] + step_ * g.sign()
                a = clean[k] + torch.minimum(torch.maximum(a - clean[k], -eps_), eps_)
                mix[k] = back_on_simplex(a, clean[k], eps, simplex)
    with torch.no_grad():
        worse = (loss0 > losses_of(mix)).view(-1, 1, 1)
    return {k: torch.where(worse, clean[k], mix[k]).detach() for k in keys}


__all__ = ["STACKED", "unstackable", "check_stackable", "stacked_grads", "stacked_arch_grads", "stacked_unrolled_grads",
           "weight_step_draw", "member_norms", "stacked_pgd"]
