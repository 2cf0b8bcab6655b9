"""DrNAS' net2wider: an op's weights for more channels, made by copying randomly chosen channels.

xiangning-chen/DrNAS ``net2wider.py`` and the ``wider`` method of each op in ``DARTS-space/operations.py``:
a conv widened along its output channels gets copies of random existing output channels (``OutChannelWider``),
along its input channels copies of random input channels (``InChannelWider``), a BatchNorm the running
statistics of the channels its conv copied (``BNWider``). Within an op the indices chain as released: a
depthwise conv's copied channels are the next pointwise conv's copied inputs, whose own copied outputs are
the BN's; a separable conv's second half draws afresh. The copies are not rescaled (net2wider is not
function-preserving here), and the SGD momentum of every widened weight is widened with the same indices
(``configure_optimizer``).

A widening is a list of :class:`Widen` steps per parameter or buffer name (keys of the plain supernet's
``state_dict``), so the same steps widen the weights, the running statistics and the momentum buffers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import torch
from torch import Tensor, nn

from nasrun.spaces.ops import ConvKx1_1xK, DilConv, FactorizedReduce, ReLUConvBN, SepConv


@dataclass(frozen=True)
class Widen:
    """Append ``tensor.index_select(dim, index)`` along ``dim``."""

    dim: int
    index: Tensor


Plan = dict[str, list[Widen]]


def _draw(old: int, new: int, generator: torch.Generator) -> Tensor:
    return torch.randint(0, old, (new - old,), generator=generator)


class _Planner:
    """The widening steps of one op, drawn in the released order from ``generator``."""

    def __init__(self, prefix: str, generator: torch.Generator, new: int) -> None:
        self.prefix, self.generator, self.new, self.plan = prefix, generator, new, {}

    def add(self, name: str, dim: int, index: Tensor) -> None:
        self.plan.setdefault(self.prefix + name, []).append(Widen(dim, index))

    def out(self, name: str, conv: nn.Conv2d, index: Tensor | None = None, new: int | None = None) -> Tensor:
        index = _draw(conv.weight.shape[0], new or self.new, self.generator) if index is None else index
        self.add(f"{name}.weight", 0, index)
        return index

    def into(self, name: str, conv: nn.Conv2d, index: Tensor | None = None) -> Tensor:
        index = _draw(conv.weight.shape[1], self.new, self.generator) if index is None else index
        self.add(f"{name}.weight", 1, index)
        return index

    def bn(self, name: str, bn: nn.BatchNorm2d, index: Tensor | None = None) -> None:
        index = _draw(bn.num_features, self.new, self.generator) if index is None else index
        for key in ("running_mean", "running_var") + (("weight", "bias") if bn.affine else ()):
            self.add(f"{name}.{key}", 0, index)


def _plan_op(p: _Planner, op: nn.Module) -> None:
    """One op's steps, as its released ``wider`` draws them."""
    if isinstance(op, SepConv):
        for dw, pw, bn in (("op.1", "op.2", "op.3"), ("op.5", "op.6", "op.7")):
            i = p.out(dw, op.op[int(dw[3:])])
            p.into(pw, op.op[int(pw[3:])], i)
            p.bn(bn, op.op[int(bn[3:])], p.out(pw, op.op[int(pw[3:])]))
    elif isinstance(op, DilConv):
        i = p.out("op.1", op.op[1])
        p.into("op.2", op.op[2], i)
        p.bn("op.3", op.op[3], p.out("op.2", op.op[2]))
    elif isinstance(op, ConvKx1_1xK):  # no released rule (not a DrNAS op): chained as its other convs are
        p.into("op.1", op.op[1])
        i = p.out("op.1", op.op[1])
        p.into("op.2", op.op[2], i)
        p.bn("op.3", op.op[3], p.out("op.2", op.op[2]))
    elif isinstance(op, ReLUConvBN):
        p.into("op.1", op.op[1])
        p.bn("op.2", op.op[2], p.out("op.1", op.op[1]))
    elif isinstance(op, FactorizedReduce):
        half = p.new // 2
        p.into("conv_1", op.conv_1)
        first = p.out("conv_1", op.conv_1, new=half)
        p.into("conv_2", op.conv_2)
        second = p.out("conv_2", op.conv_2, new=p.new - half)
        # as released: the BN copies the statistics at both halves' indices, the second's not shifted past the first
        p.bn("bn", op.bn, torch.cat([first, second]))
    elif isinstance(op, nn.Sequential) and isinstance(op[-1], nn.BatchNorm2d):  # a pooling op and its BN
        p.bn(f"{len(op) - 1}", op[-1])
    elif any(True for _ in op.parameters()) or any(True for _ in op.buffers()):
        raise ValueError(f"cannot widen {type(op).__name__}: its weights have no widening rule")


def _mixed_ops(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from nasrun.supernet.mixed_op import MixedOp

    for name, module in model.named_modules():
        if isinstance(module, MixedOp):
            yield name, module


def widening_plan(model: nn.Module, new_partial_channels: int, generator: torch.Generator) -> Plan:
    """The steps that take every mixed op of ``model`` to ``C / new_partial_channels`` channels per op (in module
    order, every op of every edge, so the draws do not depend on which ops the next stage keeps)."""
    plan: Plan = {}
    for name, edge in _mixed_ops(model):
        new = edge.C_op * edge.partial_channels // new_partial_channels
        for k, op in enumerate(edge.ops):
            planner = _Planner(f"{name}.ops.{k}.", generator, new)
            _plan_op(planner, op)
            plan.update(planner.plan)
    return plan


def widen(tensor: Tensor, steps: list[Widen]) -> Tensor:
    """``tensor`` with every step's copies appended, in order."""
    for step in steps:
        tensor = torch.cat([tensor, tensor.index_select(step.dim, step.index.to(tensor.device))], dim=step.dim)
    return tensor


def widen_state(state: Mapping[str, Tensor], plan: Plan) -> dict[str, Tensor]:
    """A plain state dict (or any tensors by those names: momentum buffers) with every planned entry widened."""
    return {k: (widen(v, plan[k]) if k in plan and v is not None else v) for k, v in state.items()}


# ------------------------------------------------------------------ the next stage's supernet and optimisers
class Kept:
    """Which of the last stage's ops the next stage keeps: per mixed op (module name) the new index of each kept
    old op index, and per alpha kind the old column of each new one (``(edges, kept ops)``)."""

    def __init__(self, old: nn.Module, new: nn.Module) -> None:
        self.ops: dict[str, dict[int, int]] = {}
        for (name, a), (_, b) in zip(_mixed_ops(old), _mixed_ops(new)):
            self.ops[name] = {a.op_names.index(op): j for j, op in enumerate(b.op_names)}
        self.columns = {kind: torch.tensor([[row.index(k) for k in new_row] for row, new_row
                                            in zip(old.edge_ops[kind], new.edge_ops[kind])])
                        for kind in new.kinds}

    def rename(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Tensors by the last stage's names under the next stage's: the kept ops renumbered, the others left out,
        the alphas' kept columns."""
        out = {}
        for key, t in tensors.items():
            head, sep, tail = key.partition(".ops.")
            if sep and head in self.ops:
                index, _, rest = tail.partition(".")
                new = self.ops[head].get(int(index))
                if new is not None:
                    out[f"{head}.ops.{new}.{rest}"] = t
            elif key.startswith("alphas_") and key[7:] in self.columns:
                out[key] = self.alpha(t, key[7:])
            else:
                out[key] = t
        return out

    def alpha(self, t: Tensor, kind: str) -> Tensor:
        return t.gather(1, self.columns[kind].to(t.device))


def plain_momentum(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    """The SGD momentum buffers of ``model``'s weights, keyed as the plain supernet's state dict."""
    from nasrun.supernet.batched import plain_named

    named = {name: opt.state[p].get("momentum_buffer") for name, p in model.named_parameters() if p in opt.state}
    return {k: v for k, v in plain_named(model, named).items() if v is not None}


def set_momentum(opt: torch.optim.Optimizer, model: nn.Module, plain: Mapping[str, Tensor]) -> None:
    """Put momentum buffers keyed as the plain supernet's into ``opt``'s state for ``model``'s parameters."""
    from nasrun.supernet.batched import stacked_named

    stacked = stacked_named(model, plain)
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    for name, p in model.named_parameters():
        if name in stacked and id(p) in held:
            opt.state[p]["momentum_buffer"] = stacked[name].detach().clone()


def carry_adam(old_opt: torch.optim.Optimizer, old: nn.Module, new_opt: torch.optim.Optimizer, new: nn.Module,
               kept: Kept) -> None:
    """The alphas' Adam state goes on (as released): the kept columns' moments, the edge weights' as they are."""
    for a, b in zip(old.arch_parameters(), new.arch_parameters()):
        state = old_opt.state.get(a)
        if not state:
            continue
        kind = next((k for k in new.kinds if new.alphas(k) is b), None)
        new_opt.state[b] = {k: (kept.alpha(v, kind) if kind is not None and torch.is_tensor(v) and v.dim() == 2
                                else v.clone() if torch.is_tensor(v) else v) for k, v in state.items()}


__all__ = ["Widen", "Plan", "widening_plan", "widen", "widen_state", "Kept", "plain_momentum", "set_momentum",
           "carry_adam"]
