"""S independent supernets run as one network whose convolutions have one group per member.

A population trains S members (each with its own weights, alphas, BN statistics and data batch).
Running them one after another dispatches S times the operators; here they share every operator:

- member m owns channel block m of every activation: ``(N, S*C, H, W)`` with channel ``m*C + c``
  being member m's channel c, and the input is the members' image batches concatenated along
  channels, ``(N, S*3, H, W)`` (:func:`stack_inputs`);
- every conv becomes a grouped conv with ``S * groups`` groups, its weight the members' weights
  concatenated along the output dim (block diagonal for dense and pointwise convs; depthwise convs
  stay per channel); a BN over ``S*C`` channels is per member by construction, running statistics
  included; pooling and ReLU act per channel anyway;
- the two concatenations of the cell (FactorizedReduce's halves, the node outputs) are re-laid out
  through an ``(N, S, C, H, W)`` view so they stay member-major;
- the mixing weights are ``(S, num_edges, ops)`` per kind, broadcast over each member's block, and
  the classifier is a batched matmul with weights ``(S, K, F)``; logits are ``(N, S, K)``.

On the CPU the network runs channels-last (oneDNN's grouped and depthwise convs are several times
faster so) and its depthwise convs take the faster equal forms of :mod:`nasrun.supernet.depthwise`.

PC-DARTS' partial channels slice and shuffle each member's block; its edge weights scale each member's edge
outputs.

NB201's skeleton stacks the same way: its single-input cells, residual blocks and BN-ReLU head.

Limits: plain supernets only (``fused=False``, softmax mixing, no auxiliary skip or skip dropout, the DARTS
and NB201 ops); members must have equal structure and
equal BN batch counts. Every op but ``none`` always runs: unlike :class:`MixedOp`, an op weighted
exactly zero is not skipped (same values; its weights get a zero gradient instead of none).
"""

from __future__ import annotations

import copy
import functools
import itertools
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.nets.nb201 import ResidualBlock
from nasrun.spaces.names import DARTS_OPS
from nasrun.spaces.ops import NB201_OPS, DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero
from nasrun.supernet.cell import SearchCell, SingleInputCell, run_nodes
from nasrun.supernet.mixed_op import MixedOp
from nasrun.supernet.network import SuperNet
from nasrun.supernet.stacked_layers import (StackedFactorizedReduce, StackedLinear, blocks, cat_members,
                                            member_loss_sum, member_losses, member_slice, same_structure, stack_bn,
                                            stack_conv, stack_inputs)

__all__ = ["StackedSuperNet", "stack_inputs", "member_losses", "member_loss_sum"]

#: Names of a member's architecture parameters: its own, never views into the stacked network.
_ARCH = ("alphas_", "betas_")
#: Modules whose forward only chains their children: stacked by stacking the children.
_CONTAINERS = (nn.Sequential, nn.ModuleList, ReLUConvBN, SepConv, DilConv, ResidualBlock)
#: Modules without state that act per channel (or not on channels at all): shared as they are.
_STATELESS = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, Identity, Zero, nn.Identity, nn.AdaptiveAvgPool2d)


class StackedMixedOp(nn.Module):
    """A mixed edge of S members: ``sum_k w[m, k] * op_k(x)`` on each member's channel block."""

    def __init__(self, mixed: Sequence[MixedOp]) -> None:
        super().__init__()
        same_structure(mixed, ("op_names", "stride", "partial_channels"))
        for m in mixed:
            if type(m) is not MixedOp:
                raise ValueError(f"unsupported mixed op {type(m).__name__} (fused edges are not stacked)")
            if m.aux is not None:
                raise ValueError("unsupported feature: auxiliary skip (DARTS-)")
            if m.skip_dropout > 0:
                raise ValueError("unsupported feature: skip dropout (P-DARTS)")
            if m.single_op is not None:
                raise ValueError("unsupported feature: single-op (GDAS) mixing")
        self.S, self.stride, self.op_names = len(mixed), mixed[0].stride, mixed[0].op_names
        self.K = mixed[0].partial_channels
        self.ops = _stack_module([m.ops for m in mixed])
        self._active = [k for k, name in enumerate(self.op_names) if name != "none"]
        self._relu_first = {k for k in self._active if _begins_with_relu(self.ops[k])}

    def forward(self, x: Tensor, weights: Tensor, relus: dict[int, Tensor] | None = None) -> Tensor:
        """``weights``: ``(ops, 1, S, 1, 1, 1)`` (the edge's row of every member, shaped to broadcast).

        The ops that begin with a ReLU of the input share one (the solo ops each apply their own: the same
        values); ``relus`` keeps it per input for the cell's other edges from the same state.
        With PC-DARTS' partial channels K > 1 each member's first C/K channels go through the ops and the rest
        bypass them (max-pooled when the edge strides); each member's channels are then shuffled in K groups."""
        xa = x if self.K == 1 else member_slice(x, self.S, 0, x.shape[1] // (self.S * self.K))
        relus = {} if relus is None else relus
        w = weights.unbind(0)
        out: Tensor | None = None
        for k in self._active:
            if k in self._relu_first:
                if id(x) not in relus:
                    relus[id(x)] = F.relu(xa)
                y = _after_relu(self.ops[k], relus[id(x)])
            else:
                y = self.ops[k](xa)
            term = blocks(y, self.S) * w[k]
            out = term if out is None else out + term
        if out is None:  # only `none` on this edge
            out = blocks(Zero(self.stride)(xa), self.S)
        n, s, c, h, wd = out.shape
        if self.K == 1:
            return out.view(n, s * c, h, wd)
        xb = blocks(x, self.S)[:, :, c:]
        if self.stride == 2:
            xb = blocks(F.max_pool2d(xb.reshape(n, -1, *xb.shape[3:]), 2, 2), self.S)
        both = torch.cat([out, xb], dim=2)  # (N, S, C, H, W): each member's ops' output, then its bypass
        return both.view(n, s, self.K, -1, h, wd).transpose(2, 3).reshape(n, -1, h, wd)


def _begins_with_relu(op: nn.Module) -> bool:
    """Whether a stacked op's first step is a ReLU of its input."""
    return isinstance(op, StackedFactorizedReduce) or (
        isinstance(op, (ReLUConvBN, SepConv, DilConv)) and isinstance(op.op[0], nn.ReLU))


def _after_relu(op: nn.Module, r: Tensor) -> Tensor:
    """What an op that begins with a ReLU (:func:`_begins_with_relu`) computes from ``r``, that ReLU's output."""
    if isinstance(op, StackedFactorizedReduce):
        return op.after_relu(r)
    for module in itertools.islice(op.op, 1, None):
        r = module(r)
    return r


def _run_nodes(edges: nn.ModuleList, states: list[Tensor], nodes: int, weights: Tensor,
               edge_weights: Tensor | None) -> list[Tensor]:
    """The solo cell's node loop (:func:`nasrun.supernet.cell.run_nodes`) over stacked edges; all states.
    ``weights``: the members' mixing weights ``(S, num_edges, ops)``; ``edge_weights``: ``(S, num_edges)`` or None,
    each member's factor repeated over its channels. The edges from one state share its ReLU."""
    S, E, O = weights.shape
    rows = weights.permute(1, 2, 0).reshape(E, O, 1, S, 1, 1, 1).unbind(0)
    factors = None
    if edge_weights is not None:
        per_member = states[0].shape[1] // S
        factors = edge_weights.T.repeat_interleave(per_member, dim=1).view(E, 1, -1, 1, 1).unbind(0)
    relus: dict[int, Tensor] = {}  # id of a state -> its ReLU; the states live in `states` all along
    sharing = [functools.partial(edge, relus=relus) for edge in edges]
    return run_nodes(sharing, states, nodes, rows, factors)


def _plain_cells(cells: Sequence[nn.Module], kind: type) -> None:
    if any(type(c) is not kind or c._batched for c in cells):
        raise ValueError("unsupported feature: fused/batched cells (build the members with fused=False)")


class StackedCell(nn.Module):
    """A DARTS search cell of S members; its output concatenates the nodes member-major."""

    def __init__(self, cells: Sequence[SearchCell]) -> None:
        super().__init__()
        same_structure(cells, ("nodes", "reduction", "multiplier"))
        _plain_cells(cells, SearchCell)
        self.S, self.nodes, self.reduction = len(cells), cells[0].nodes, cells[0].reduction
        self.preprocess0 = _stack_module([c.preprocess0 for c in cells])
        self.preprocess1 = _stack_module([c.preprocess1 for c in cells])
        self.edges = nn.ModuleList(StackedMixedOp([c.edges[e] for c in cells]) for e in range(len(cells[0].edges)))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, edge_weights: Tensor | None = None) -> Tensor:
        """``weights``: the cell kind's mixing weights ``(S, num_edges, ops)``; ``edge_weights``: each member's
        factors for the edges' outputs ``(S, num_edges)`` (PC-DARTS' edge normalisation) or None."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        return cat_members(_run_nodes(self.edges, states, self.nodes, weights, edge_weights)[2:], self.S)


class StackedSingleInputCell(nn.Module):
    """An NB201 search cell of S members: node j sums a stacked edge from every earlier node; the last is the output."""

    def __init__(self, cells: Sequence[SingleInputCell]) -> None:
        super().__init__()
        same_structure(cells, ("nodes",))
        _plain_cells(cells, SingleInputCell)
        self.S, self.nodes = len(cells), cells[0].nodes
        self.edges = nn.ModuleList(StackedMixedOp([c.edges[e] for c in cells]) for e in range(len(cells[0].edges)))

    def forward(self, x: Tensor, weights: Tensor, edge_weights: Tensor | None = None) -> Tensor:
        return _run_nodes(self.edges, [x], self.nodes, weights, edge_weights)[-1]


#: Module type -> how S members' copies of it become one module.
_STACKERS: dict[type, Callable[[Sequence], nn.Module]] = {
    nn.Conv2d: stack_conv,
    nn.BatchNorm2d: stack_bn,
    nn.Linear: StackedLinear,
    FactorizedReduce: StackedFactorizedReduce,
    MixedOp: StackedMixedOp,
    SearchCell: StackedCell,
    SingleInputCell: StackedSingleInputCell,
}


def _stack_module(mods: Sequence[nn.Module]) -> nn.Module:
    """The stacked version of S structurally equal modules (same type, same children)."""
    kind = type(mods[0])
    if any(type(m) is not kind for m in mods):
        raise ValueError(f"members differ in module type: {sorted({type(m).__name__ for m in mods})}")
    if kind in _STACKERS:
        return _STACKERS[kind](mods)
    if kind in _STATELESS:
        return copy.deepcopy(mods[0])
    if kind in _CONTAINERS:
        first = mods[0]
        if first._parameters or first._buffers:
            raise ValueError(f"unsupported module with own parameters: {kind.__name__}")
        names = list(first._modules)
        if any(list(m._modules) != names for m in mods):
            raise ValueError(f"members' {kind.__name__} modules have different children")
        out = copy.copy(first)
        out._parameters, out._buffers, out._modules = {}, {}, {}
        for name in names:
            out._modules[name] = _stack_module([m._modules[name] for m in mods])
        return out
    raise ValueError(f"unsupported module in a stacked supernet: {kind.__name__}")


def _check_member(net: SuperNet) -> None:
    """Refuse a member with a feature the stacked network does not implement, naming it."""
    if not isinstance(net, SuperNet):
        raise ValueError(f"members must be SuperNets, got {type(net).__name__}")
    from nasrun.methods.alpha_maps import Softmax

    space = net.space
    problems = {
        "fused supernets (fused=True)": net.fused,
        "a non-softmax alpha map": net.alpha_map is not None and type(net.alpha_map) is not Softmax,
        "independent (per-position) cells": space.sharing != "shared",
        "ops outside the DARTS and NB201 spaces": any(op not in DARTS_OPS + NB201_OPS for op in net.ops),
        "an auxiliary skip (DARTS-)": any(isinstance(m, MixedOp) and m.aux is not None for m in net.modules()),
    }
    for feature, bad in problems.items():
        if bad:
            raise ValueError(f"StackedSuperNet does not support {feature}")


class StackedSuperNet(nn.Module):
    """S plain supernets (DARTS-like or NB201) as one network (see the module docstring for the layout).

    The state dict keeps the solo supernet's names; conv and BN tensors hold the members' tensors
    concatenated along dim 0, the alphas (``(S, E, O)``) and the classifier (``(S, K, F)``, ``(S, K)``)
    stack them along a new dim 0, and every ``num_batches_tracked`` is shared.
    :meth:`member_state_dict` gives back one member's solo state dict.
    """

    def __init__(self, nets: Sequence[SuperNet]) -> None:
        super().__init__()
        if not nets:
            raise ValueError("a stacked supernet needs at least one member")
        for net in nets:
            _check_member(net)
        same_structure(nets, ("C", "num_classes", "layers", "ops", "nodes", "positions", "kinds", "edge_ops",
                              "edge_norm"))
        first = nets[0]
        self.S, self.C, self.num_classes, self.layers = len(nets), first.C, first.num_classes, first.layers
        self.ops, self.nodes, self.num_edges = first.ops, first.nodes, first.num_edges
        self.kinds, self.positions, self.edge_ops = list(first.kinds), list(first.positions), first.edge_ops
        self.in_channels = first.stem[0].in_channels
        self.skeleton = first.space.skeleton
        self.stem = _stack_module([n.stem for n in nets])
        self.cells = nn.ModuleList(_stack_module([n.cells[i] for n in nets]) for i in range(len(first.cells)))
        if self.skeleton == "nb201":  # the residual blocks between its stages
            self.blocks = nn.ModuleList(_stack_module([n.blocks[i] for n in nets]) for i in range(len(first.blocks)))
        self.head = _stack_module([n.head for n in nets])
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = StackedLinear([n.classifier for n in nets])
        self.edge_norm, self.inputs = first.edge_norm, first.space.inputs
        arch = ["alphas"] + (["betas"] if self.edge_norm else [])
        for prefix in arch:
            for kind in self.kinds:
                stacked = torch.stack([getattr(n, f"{prefix}_{kind}").detach() for n in nets]).clone()
                setattr(self, f"{prefix}_{kind}", nn.Parameter(stacked))
        self._member_index = {f"{p}_{k}" for p in arch for k in self.kinds} | {"classifier.weight", "classifier.bias"}

    @classmethod
    def linked(cls, nets: Sequence[SuperNet]) -> "StackedSuperNet":
        """The stacked network, with every member's weights and BN buffers made views into its tensors.

        A member's optimiser then steps the stacked weights in place, its BN statistics move with the stacked
        BN's, and its ``state_dict`` reads the member's share: nothing is copied between steps. Every
        ``num_batches_tracked`` of the members is the stacked BN's one counter, and every member's weight gradient
        a view of its share of the stacked gradient (:meth:`zero_member_grads`). The alphas stay the members'
        own (pass them stacked to :meth:`forward` as ``mix``)."""
        net = cls(nets)
        params, buffers = dict(net.named_parameters()), dict(net.named_buffers())
        for m, member in enumerate(nets):
            for name, p in member.named_parameters():
                if not name.startswith(_ARCH):
                    p.data = net.member_tensor(name, params[name].data, m)
            for name, b in list(member.named_buffers()):
                owner, _, attr = name.rpartition(".")
                module = member.get_submodule(owner)
                shared = buffers[name] if b.dim() == 0 else net.member_tensor(name, buffers[name], m)
                setattr(module, attr, shared)
        net._link_grads(nets)
        return net

    def links(self, nets: Sequence[SuperNet]) -> bool:
        """Whether ``nets`` are still this network's members in this order, as :meth:`linked` left them: every
        weight, weight gradient and buffer of member m at member m's place in this network's tensors (addresses
        are compared, no tensor is read)."""
        own = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        grads = {name: p.grad for name, p in self.named_parameters()}

        def at(t: Tensor | None, mine: Tensor | None, m: int) -> bool:
            if t is None or mine is None:
                return False
            offset = 0 if mine.dim() == 0 else m * (mine.shape[0] // self.S) * mine.stride(0)
            return t.data_ptr() == mine.data_ptr() + offset * mine.element_size()

        if len(nets) != self.S:
            return False
        for m, net in enumerate(nets):
            for name, p in net.named_parameters():
                if not name.startswith(_ARCH) and not (at(p, own.get(name), m) and at(p.grad, grads.get(name), m)):
                    return False
            if not all(at(b, own.get(name), m) for name, b in net.named_buffers()):
                return False
        return True

    def zero_member_grads(self) -> None:
        """Zero the stacked weights' gradients in place (one call): the members' ``.grad`` are views into them."""
        torch._foreach_zero_([p.grad for p in self._linked_weights])

    def _link_grads(self, nets: Sequence[SuperNet]) -> None:
        """Every stacked weight gets a gradient buffer once, and each member's weight a view of its share: a
        backward accumulates into the buffer in place, so no member's gradient is set again step by step."""
        params = dict(self.named_parameters())
        self._linked_weights = [p for _, p in self.named_weights()]
        for p in self._linked_weights:
            p.grad = torch.zeros_like(p)
        for m, member in enumerate(nets):
            for name, p in member.named_parameters():
                if not name.startswith(_ARCH):
                    p.grad = self.member_tensor(name, params[name].grad, m)

    # ------------------------------------------------------------------ parameters
    def alphas(self, kind: str) -> nn.Parameter:
        return getattr(self, f"alphas_{kind}")

    def arch_parameters(self) -> list[nn.Parameter]:
        """The stacked alphas ``(S, num_edges, ops)`` of every kind, in the space's order (then the betas
        ``(S, num_edges)``, with edge normalisation)."""
        params = [self.alphas(kind) for kind in self.kinds]
        return params + ([getattr(self, f"betas_{kind}") for kind in self.kinds] if self.edge_norm else [])

    def edge_weights(self) -> dict[str, Tensor] | None:
        """Edge normalisation: every member's softmax of its betas over each node's incoming edges ``(S, E)``."""
        if not self.edge_norm:
            return None
        out = {}
        for kind in self.kinds:
            betas, parts, start = getattr(self, f"betas_{kind}"), [], 0
            for i in range(self.nodes):
                width = self.inputs + i
                parts.append(F.softmax(betas[:, start:start + width], dim=-1))
                start += width
            out[kind] = torch.cat(parts, dim=1)
        return out

    def named_weights(self) -> list[tuple[str, nn.Parameter]]:
        """Every stacked parameter except the alphas, with its (the solo supernet's) name."""
        arch = {id(p) for p in self.arch_parameters()}
        return [(name, p) for name, p in self.named_parameters() if id(p) not in arch]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every stacked parameter except the alphas, in ``named_parameters`` order."""
        return [p for _, p in self.named_weights()]

    def softmax_weights(self) -> dict[str, Tensor]:
        """Per kind, softmax of every member's alphas over the op axis: ``(S, num_edges, ops)``."""
        return {kind: F.softmax(self.alphas(kind), dim=-1) for kind in self.kinds}

    def member_tensor(self, name: str, tensor: Tensor, m: int) -> Tensor:
        """Member m's part (a view) of the stacked state entry ``name`` or of its gradient."""
        if tensor.dim() == 0:  # num_batches_tracked: one counter for all members
            return tensor
        if name in self._member_index:
            return tensor[m]
        return tensor.unflatten(0, (self.S, -1))[m]

    def member_blocks(self, name: str, tensor: Tensor) -> Tensor:
        """The stacked entry ``name`` (or its gradient, or a direction shaped like it) as ``(S, ...)``: a view."""
        return tensor if name in self._member_index else tensor.unflatten(0, (self.S, -1))

    def scale_blocks(self, name: str, tensor: Tensor, factors: Tensor) -> Tensor:
        """``tensor`` (shaped like the stacked entry ``name``) with member m's block times ``factors[m]``."""
        blocks = self.member_blocks(name, tensor)
        return (blocks * factors.view(-1, *[1] * (blocks.dim() - 1))).view_as(tensor)

    def member_state_dict(self, m: int) -> dict[str, Tensor]:
        """Member m's solo ``SuperNet.state_dict()`` (same names and shapes; copies, detached)."""
        if not 0 <= m < self.S:
            raise IndexError(f"member {m} out of range for {self.S} members")
        return {name: self.member_tensor(name, t, m).detach().clone() for name, t in self.state_dict().items()}

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, mix: dict[str, Tensor] | None = None, edges: dict[str, Tensor] | None = None
                ) -> Tensor:
        """Logits ``(N, S, K)`` for the members' batches ``x`` of shape ``(N, S*in_channels, H, W)``
        (:func:`stack_inputs`); ``mix``: mixing weights ``(S, num_edges, ops)`` per kind (default softmax);
        ``edges``: with edge normalisation, the edge weights ``(S, num_edges)`` per kind (default the betas')."""
        if mix is None:
            mix = self.softmax_weights()
        if edges is None:
            edges = self.edge_weights() or {}
        if x.dim() != 4 or x.shape[1] != self.S * self.in_channels:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (N, {self.S * self.in_channels}, H, W)")
        for kind in self.kinds:
            shape = (self.S, self.num_edges, len(self.edge_ops[kind][0]))
            if tuple(mix[kind].shape) != shape:
                raise ValueError(f"mix[{kind!r}] has shape {tuple(mix[kind].shape)}, expected {shape}")
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        s = self._cells(self.stem(x), mix, edges)
        pooled = self.global_pooling(self.head(s))
        return self.classifier(pooled.view(pooled.shape[0], self.S, -1))

    def _cells(self, s: Tensor, mix: dict[str, Tensor], edges: dict[str, Tensor]) -> Tensor:
        """The cells after the stem: DARTS' two-input cells, or NB201's stages joined by residual blocks."""
        if self.skeleton == "nb201":
            for i, cell in enumerate(self.cells):
                if i and i % self.layers == 0:
                    s = self.blocks[i // self.layers - 1](s)
                s = cell(s, mix["normal"], edges.get("normal"))
            return s
        s0 = s1 = s
        for cell, (kind, _) in zip(self.cells, self.positions):
            s0, s1 = s1, cell(s0, s1, mix[kind], edges.get(kind))
        return s1
