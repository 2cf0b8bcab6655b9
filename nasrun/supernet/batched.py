"""Fused edges batched across a cell: all the edges that leave one state, computed as one fused edge.

In a search cell every edge leaving a state reads that very tensor at one stride. With
``supernet.fused=true`` each (source state, op list) of a cell becomes an :class:`EdgeGroup`: the
fused mixed edge of ``nasrun.supernet.fused`` with the members of all its edges side by side along
channels (op-major: channel block ``j * m + i`` is op j of the group's edge i), so one ReLU, one
depthwise and one grouped pointwise conv per stage, one BN over every op's output (scaled by the
mixing weights), one sum over the ops, one batched skip term, channel shuffle and edge weight serve
all ``m`` edges. The cell runs the groups state by state: once a state exists, its groups run and add
every edge's output to its target node (in source order, the order the plain cell sums in). A
DARTS cell thus runs 5 groups instead of 14 edges. Edges whose op lists differ (P-DARTS' later stages,
per-edge spaces) form groups of their own.

Parameters: every stacked conv weight is one parameter of the group (``m * C`` rows per op for the
depthwise kernels, one per op since their sizes differ; all members' rows for the pointwise ones), so
a step updates 47 tensors per normal DARTS cell instead of 170. The per-op conv modules keep no
parameter: their ``weight`` is a view into the group's (made anew for the plain path). The cell's
``state_dict`` hooks give and take the plain supernet's layout, names and order, so checkpoints move
between the two; :func:`plain_named` maps the parameter-named tensors (gradients, say) likewise.
BN running statistics stay buffers of the per-op BNs, as views into one tensor per group and BN stage
(``nasrun.supernet.fused.BufferLinks``).

What the groups do not fuse runs per edge inside the group (FactorizedReduce skips, NB201's and NASP's
convs): plain ops that draw no randomness. Cells with ops that draw from a stream in edge order
(``noise``) keep the per-edge fused op, and so does a supernet whose weight step trains single paths
(``SuperNet``: NASP's alpha map), where an op that did not run must get no gradient, which a stacked
parameter cannot express for some of its rows. P-DARTS' skip dropout masks are drawn at the start of
the cell, in edge order, as the plain cell draws them. The plain path (edge by edge, in node order,
with the views) runs instead when the weights carry no gradient and weight an op exactly zero (a
one-hot architecture: only the chosen ops run and move their statistics) or when a BN buffer was
replaced behind the cell's back.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.spaces.ops import POOLING_OPS, strided_shape
from nasrun.spaces.space import cell_edges
from nasrun.supernet import fused as fused_edge
from nasrun.supernet.fused import (DIL_OPS, SEP_OPS, BufferLinks, _BNGroup, _ConvStage, _dilated_on_cpu, _fits,
                                   _pad_kernel)
from nasrun.supernet.mixed_op import MixedOp

#: Ops that draw from a random stream on every call, in edge order: their cells are not batched.
RANDOM_OPS = frozenset({"noise"})


def batchable(op_lists: Sequence[Sequence[str]]) -> bool:
    """Whether a cell with these per-edge op lists can run batched (no op draws from a stream in edge order)."""
    return not any(op in RANDOM_OPS for ops in op_lists for op in ops)


@dataclass
class _Stacked:
    """A conv stage of a group: depthwise parameters (one per op, kernels zero-padded to ``kernel`` on every
    call) applied as one depthwise conv, then the pointwise parameter as one 1x1 conv with ``members`` groups."""

    dw: list[str]
    pw: str
    members: int
    kernel: int
    stride: int
    padding: int
    dilation: int


def _repeat(r: Tensor, m: int, cache: dict[int, Tensor]) -> Tensor:
    """``m`` copies of ``r`` along channels, in ``r``'s memory format (once per ``m``).

    ``repeat`` rather than a concatenation of ``m`` copies: its backward is one reduction, not ``m``
    slices and ``m - 1`` additions.
    """
    if m == 1:
        return r
    if m not in cache:
        if r.is_contiguous(memory_format=torch.channels_last) and not r.is_contiguous():
            cache[m] = r.permute(0, 2, 3, 1).repeat(1, 1, 1, m).permute(0, 3, 1, 2)
        else:
            cache[m] = r.repeat(1, m, 1, 1)
    return cache[m]


def _sum_blocks(y: Tensor, n: int) -> Tensor:
    """The sum of ``y``'s ``n`` equal channel blocks. A channels-last ``y`` is summed as ``(N, H, W, C)``, so
    that the gradient reaching the BN before it is channels-last too (a mixed layout makes the CPU's BN
    backward several times slower)."""
    if n == 1:
        return y
    N, c, H, W = y.shape
    if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
        return y.permute(0, 2, 3, 1).view(N, H, W, n, c // n).sum(3).permute(0, 3, 1, 2)
    return y.view(N, n, c // n, H, W).sum(1)


class EdgeGroup(nn.Module):
    """The edges of a cell that leave one state with one op list, run as one fused edge (module docstring).

    Its edges are the cell's plain mixed edges ``cell_edges[r]``, ``r`` in ``rows`` (alpha rows); it takes
    their fusable ops' conv weights as its own stacked parameters and links their BN buffers. ``C`` is
    the channels an op sees (C / partial channels), ``ncols`` the alpha columns per edge. ``stacks``
    names, per stacked parameter, the ``(edge position, key inside the edge)`` of its members in row
    order (``C`` rows each).
    """

    def __init__(self, cell_edges: Sequence[MixedOp], rows: Sequence[int], C: int, ncols: int) -> None:
        super().__init__()
        edges = [cell_edges[r] for r in rows]
        first = edges[0]
        self.rows, self.C, self.ncols = list(rows), C, ncols
        self.stride, self.K = first.stride, first.partial_channels
        names = first.op_names
        self.skip = first._identity[0] if first._identity else None
        self.sep = [k for k in first._active if names[k] in SEP_OPS]
        self.dil = [k for k in first._active if names[k] in DIL_OPS]
        self.pools = [k for k in first._active if names[k] in POOLING_OPS]
        if not self._fits(edges):
            self.sep, self.dil, self.pools = [], [], []
        self.final = self.sep + self.dil + self.pools
        self.plain = [k for k in first._active if k not in self.final and k != self.skip]
        self.stacks: dict[str, list[tuple[int, str]]] = {}
        self._sep1 = self._sep2 = self._dil = None
        self._stack_convs(edges, names)
        self.views(cell_edges)
        self._links = BufferLinks(self._bn_groups(edges))
        self.link()

    # ------------------------------------------------------------------ building
    def _members(self, ops: list[int]) -> list[tuple[int, int]]:
        """(edge position, op column) of every member of ``ops``, op-major."""
        return [(i, k) for k in ops for i in range(len(self.rows))]

    def _fits(self, edges: Sequence[MixedOp]) -> bool:
        s, C = self.stride, self.C
        seq = [edges[i].ops[k].op for i, k in self._members(self.sep)]
        dil = [edges[i].ops[k].op for i, k in self._members(self.dil)]
        ks = max((q[1].kernel_size[0] for q in seq), default=1)
        kd = max((q[1].kernel_size[0] for q in dil), default=1)
        stages = [_ConvStage([q[1] for q in seq], [q[2] for q in seq], ks, s, (ks - 1) // 2, 1),
                  _ConvStage([q[5] for q in seq], [q[6] for q in seq], ks, 1, (ks - 1) // 2, 1),
                  _ConvStage([q[1] for q in dil], [q[2] for q in dil], kd, s, kd - 1, 2)]
        bns = [q[3] for q in seq] + [q[7] for q in seq] + [q[3] for q in dil]
        bns += [edges[i].ops[k][1] for i, k in self._members(self.pools)]
        return _fits(stages, bns, C)

    def _stack(self, edges: Sequence[MixedOp], name: str, members: list[tuple[int, int]], index: int) -> None:
        """One parameter of the members' ``op[index]`` conv weights, in member order (their values kept)."""
        keys = [(i, f"ops.{k}.op.{index}.weight") for i, k in members]
        weights = [edges[i].get_parameter(key) for i, key in keys]
        self.register_parameter(name, nn.Parameter(torch.cat([w.detach() for w in weights])))
        for i, key in keys:
            del edges[i].get_submodule(key[: -len(".weight")])._parameters["weight"]
        self.stacks[name] = keys

    def _stack_convs(self, edges: Sequence[MixedOp], names: Sequence[str]) -> None:
        s = self.stride
        if self.sep:
            ks = max(edges[0].ops[k].op[1].kernel_size[0] for k in self.sep)
            for stage, (dw, pw) in (("1", (1, 2)), ("2", (5, 6))):
                for k in self.sep:
                    self._stack(edges, f"{names[k]}_dw{stage}", self._members([k]), dw)
                self._stack(edges, f"sep_pw{stage}", self._members(self.sep), pw)
            n = len(self._members(self.sep))
            self._sep1 = _Stacked([f"{names[k]}_dw1" for k in self.sep], "sep_pw1", n, ks, s, (ks - 1) // 2, 1)
            self._sep2 = _Stacked([f"{names[k]}_dw2" for k in self.sep], "sep_pw2", n, ks, 1, (ks - 1) // 2, 1)
        if self.dil:
            kd = max(edges[0].ops[k].op[1].kernel_size[0] for k in self.dil)
            for k in self.dil:
                self._stack(edges, f"{names[k]}_dw", self._members([k]), 1)
            self._stack(edges, "dil_pw", self._members(self.dil), 2)
            n = len(self._members(self.dil))
            self._dil = _Stacked([f"{names[k]}_dw" for k in self.dil], "dil_pw", n, kd, s, kd - 1, 2)

    def _bn_groups(self, edges: Sequence[MixedOp]) -> list[_BNGroup]:
        bn1 = [edges[i].ops[k].op[3] for i, k in self._members(self.sep)]
        final = [edges[i].ops[k].op[7] for i, k in self._members(self.sep)]
        final += [edges[i].ops[k].op[3] for i, k in self._members(self.dil)]
        final += [edges[i].ops[k][1] for i, k in self._members(self.pools)]
        self._bn1 = _BNGroup(bn1) if bn1 else None
        self._bnF = _BNGroup(final) if final else None
        return [g for g in (self._bn1, self._bnF) if g is not None]

    # ------------------------------------------------------------------ the per-op views
    def views(self, edges: Sequence[MixedOp], grad: bool = False) -> None:
        """Give every stacked member conv of the cell's ``edges`` its ``weight`` as a view into the group's
        parameter (with gradient for the plain path; detached otherwise, so the modules can be copied)."""
        for name, keys in self.stacks.items():
            p = getattr(self, name)
            p = p if grad else p.detach()
            for j, (i, key) in enumerate(keys):
                conv = edges[self.rows[i]].get_submodule(key[: -len(".weight")])
                conv.weight = p[j * self.C : (j + 1) * self.C]

    def linked(self) -> bool:
        """Whether the member BNs' buffers are still the views into the group's tensors."""
        return not self.final or self._links.linked()

    def link(self) -> None:
        """Make the member BNs' buffers views into one tensor per BN stage again (values kept)."""
        if self.final:
            self._links.link()

    # ------------------------------------------------------------------ forward
    def weight_index(self) -> tuple[list[int], list[int], list[int]]:
        """Where the group reads the cell's mixing weights (flattened): the final BN's scale per channel, the
        skip weight per edge, the plain ops' weights per edge."""
        n = self.ncols
        scale = [self.rows[i] * n + k for i, k in self._members(self.final) for _ in range(self.C)]
        skip = [self.rows[i] * n + k for i, k in self._members([self.skip] if self.skip is not None else [])]
        plain = [r * n + k for r in self.rows for k in self.plain]
        return scale, skip, plain

    def forward(self, x: Tensor, weights: Sequence[Tensor], edge_weights: Optional[Tensor],
                masks: Optional[dict[int, Tensor]], edges: Sequence[MixedOp]) -> tuple[Tensor, ...]:
        """The outputs of the group's edges from the source state ``x``: ``weights`` are the mixing weights at
        :meth:`weight_index`, ``edge_weights`` the edges' factors (or None), ``masks`` skip dropout masks per row."""
        scale, skip, plain = weights
        xa = x if self.K == 1 else x[:, : self.C]
        out = self._fused(xa, scale, edges) if self.final else None
        if self.skip is not None:
            t = xa.unsqueeze(1)
            if masks:
                t = t * torch.stack([masks[r] if r in masks else torch.ones_like(xa) for r in self.rows], 1)
            term = skip.view(1, -1, 1, 1, 1) * t
            out = term if out is None else out + term
        if self.plain:
            out = self._plain_terms(out, xa, plain, edges)
        if out is None:  # edges whose only candidate is `none`
            out = xa.new_zeros(strided_shape(xa, self.stride)).unsqueeze(1).expand(-1, len(self.rows), -1, -1, -1)
        out = self._bypass(x, out)
        if edge_weights is not None:
            out = out * edge_weights.view(1, -1, 1, 1, 1)
        return out.unbind(1)

    def _stage(self, st: _Stacked, inp: Tensor, cpu: bool) -> Tensor:
        dws = [_pad_kernel(getattr(self, n), st.kernel) for n in st.dw]
        dw = dws[0] if len(dws) == 1 else torch.cat(dws)
        if cpu and st.dilation == 2:
            d = _dilated_on_cpu(inp, dw, st.stride, st.padding)
        else:
            d = F.conv2d(inp, dw, None, st.stride, st.padding, st.dilation, inp.shape[1])
        return F.conv2d(d, getattr(self, st.pw), None, 1, 0, 1, st.members)

    def _fused(self, xa: Tensor, scale: Tensor, edges: Sequence[MixedOp]) -> Tensor:
        """``sum_k w_ek * op_k(xa)`` over the fused ops, per edge: ``(N, m, C, H', W')``."""
        training, m = self.training, len(self.rows)
        cpu = fused_edge._cpu_layout(xa)  # looked up on every call, so the generic layout can be forced
        xs = xa.contiguous(memory_format=torch.channels_last) if cpu else xa
        blocks: list[Tensor] = []
        if self._sep1 is not None or self._dil is not None:
            r, reps = F.relu(xs), {}
            if self._sep1 is not None:
                s = self._stage(self._sep1, _repeat(r, self._sep1.members, reps), cpu)
                s = F.relu(self._bn1(s, training))
                blocks.append(self._stage(self._sep2, s, cpu))
            if self._dil is not None:
                blocks.append(self._stage(self._dil, _repeat(r, self._dil.members, reps), cpu))
        for k in self.pools:
            blocks += [edges[self.rows[0]].ops[k][0](xs)] * m
        pre = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
        y = self._bnF(pre, training, scale)  # = w_ek * BN_ek(op_k) per block
        if training:
            self._links.count()
        return _sum_blocks(y, len(self.final)).unflatten(1, (m, self.C))

    def _plain_terms(self, out: Optional[Tensor], xa: Tensor, w: Tensor, edges: Sequence[MixedOp]) -> Tensor:
        """The ops run edge by edge (FactorizedReduce skips, convs the group does not fuse), added per edge."""
        m, ws = len(self.rows), w.unbind()
        parts: list[Optional[Tensor]] = list(out.unbind(1)) if out is not None else [None] * m
        for i, row in enumerate(self.rows):
            for j, k in enumerate(self.plain):
                term = ws[i * len(self.plain) + j] * edges[row].ops[k](xa)
                parts[i] = term if parts[i] is None else parts[i] + term
        return torch.stack(parts, 1)

    def _bypass(self, x: Tensor, out: Tensor) -> Tensor:
        """Partial channels: every edge's output beside the channels that bypassed the ops, shuffled
        (``MixedOp._bypass`` for all edges at once)."""
        K = self.K
        if K == 1:
            return out
        N, m, _, H, W = out.shape
        xb = x[:, self.C :]
        if self.stride == 2:
            xb = F.max_pool2d(xb, 2, 2)
        full = torch.cat([out, xb.unsqueeze(1).expand(N, m, -1, -1, -1)], dim=2)
        c = full.shape[2]
        return full.view(N, m, K, c // K, H, W).transpose(2, 3).reshape(N, m, c, H, W)


class BatchedCell(nn.Module):
    """Base of the search cells: with :meth:`_batch`, the cell's edges run as :class:`EdgeGroup` s.

    The cell keeps its plain mixed edges (``edges``, for the plain path and the state dict's names) and
    adds ``groups``; its state dict hooks keep the plain layout (module docstring).
    """

    _batched = False

    def _batch(self, inputs: int, C: int) -> None:
        """Group the edges (plain mixed edges, built already) by source state and op list; ``C``: channels per op."""
        nodes = self.nodes
        self._inputs, self._C = inputs, C
        self._pairs = cell_edges(inputs, nodes)
        plain_keys = list(self.state_dict(keep_vars=True))
        by_key: dict[tuple, list[int]] = {}
        for row, (src, _) in enumerate(self._pairs):
            by_key.setdefault((src, self.edges[row].op_names), []).append(row)
        ncols = len(self.edges[0].op_names)
        self.groups = nn.ModuleList(EdgeGroup(self.edges, rows, C, ncols) for rows in by_key.values())
        self._by_source = [[g for g, (src, _) in enumerate(by_key) if src == s] for s in range(inputs + nodes)]
        self._plain_keys = plain_keys
        #: plain key -> (stacked key, rows); stacked key -> its plain keys in row order
        self._to_plain: dict[str, tuple[str, int, int]] = {}
        self._from_plain: dict[str, list[str]] = {}
        for g, group in enumerate(self.groups):
            for name, keys in group.stacks.items():
                stacked = f"groups.{g}.{name}"
                self._from_plain[stacked] = [f"edges.{group.rows[i]}.{key}" for i, key in keys]
                for j, plain in enumerate(self._from_plain[stacked]):
                    self._to_plain[plain] = (stacked, j * C, (j + 1) * C)
        self._active = [[k in e._active for k in range(ncols)] for e in self.edges]
        index = [part for group in self.groups for part in group.weight_index()]
        self._sizes = [len(part) for part in index]
        self._index = [i for part in index for i in part]
        self._rows = [r for group in self.groups for r in group.rows]
        self._cache: dict[torch.device, tuple[Tensor, ...]] = {}
        self._batched = True
        self.register_state_dict_post_hook(_plain_state)
        self.register_load_state_dict_pre_hook(_stacked_state)
        self.register_load_state_dict_post_hook(_relink)

    def _relink(self) -> None:
        """Link replaced BN buffers again and make the per-op conv views anew (after ``.to()`` & co.)."""
        for group in self.groups:
            if not group.linked():
                group.link()
            group.views(self.edges)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        if self._batched:
            self._relink()
        return out

    def batched_applies(self, weights: Tensor) -> bool:
        """Whether the groups can run: their buffers are linked, and no op weighted exactly zero is to be
        skipped (weights without gradient; the plain path then runs only the ops weighted non-zero)."""
        if not all(group.linked() for group in self.groups):
            return False
        if weights.requires_grad:
            return True
        return not bool(((weights == 0) & self._tensors(weights.device)[2]).any())

    def _tensors(self, device: torch.device) -> tuple[Tensor, ...]:
        """On ``device``: the groups' weight indices, their rows, and the mask of the ops that are not `none`."""
        out = self._cache.get(device)
        if out is None:
            out = (torch.tensor(self._index, dtype=torch.long, device=device),
                   torch.tensor(self._rows, dtype=torch.long, device=device),
                   torch.tensor(self._active, dtype=torch.bool, device=device))
            self._cache[device] = out
        return out

    @contextmanager
    def plain_views(self, weights: Tensor) -> Iterator[None]:
        """The per-op conv weights as views with gradient, while the plain path runs.

        A gradient-free ``weights`` that skips ops while autograd records is a single-path weight step: the
        stacked parameters of the ops that did not run then get zeros (weight decay and momentum still
        move them), not the plain supernet's no gradient; said once, since the results differ.
        """
        if torch.is_grad_enabled() and not weights.requires_grad and all(g.linked() for g in self.groups):
            warnings.warn("a fused, batched supernet trained on single paths: the ops that did not run get zero "
                          "gradients in stacked parameters (not none); use a single-path alpha map "
                          "(alpha_map=argmax) or supernet.fused=false to keep them untouched", RuntimeWarning,
                          stacklevel=3)
        for group in self.groups:
            group.views(self.edges, grad=True)
        try:
            yield
        finally:
            for group in self.groups:
                group.views(self.edges)

    def run_batched(self, states: list[Tensor], weights: Tensor, edge_weights: Optional[Tensor]) -> list[Tensor]:
        """Every node from the cell inputs ``states``: the groups of each state once it exists, each edge's
        output added to its target node; all states."""
        inputs, nodes = self._inputs, self.nodes
        index, rows, _ = self._tensors(weights.device)
        w = weights.reshape(-1)[index].split(self._sizes)  # every group's weights at once: 3 per group
        ew = None if edge_weights is None else edge_weights[rows].split([len(g.rows) for g in self.groups])
        masks = self._skip_masks(states[-1])
        acc: list[Optional[Tensor]] = [None] * nodes
        for src in range(inputs + nodes - 1):
            if src >= inputs:
                states.append(acc[src - inputs])
            for g in self._by_source[src]:
                group, e = self.groups[g], None if ew is None else ew[g]
                for row, y in zip(group.rows, group(states[src], w[3 * g : 3 * g + 3], e, masks, self.edges)):
                    t = self._pairs[row][1] - inputs
                    acc[t] = y if acc[t] is None else acc[t] + y
        states.append(acc[-1])
        return states

    def _skip_masks(self, last_input: Tensor) -> Optional[dict[int, Tensor]]:
        """P-DARTS' skip dropout masks per row, drawn in row order as the plain cell draws them (None when off).

        Dropout of ``x`` is ``x * mask`` with ``mask = dropout(ones)``: the same draws, the same products.
        """
        masks: Optional[dict[int, Tensor]] = None
        for row, edge in enumerate(self.edges):
            if edge._identity and edge.skip_dropout > 0 and edge.training:
                if masks is None:
                    n, _, h, w = strided_shape(last_input, self.edges[0].stride)
                    ones, masks = last_input.new_ones((n, self._C, h, w)), {}
                masks[row] = F.dropout(ones, edge.skip_dropout, training=True)
        return masks


def _plain_state(cell: BatchedCell, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """``state_dict`` post hook: the stacked parameters as the plain cell's per-op entries, in its order."""
    own = {k[len(prefix):]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
    for key in cell._plain_keys:
        if key in cell._to_plain:
            stacked, a, b = cell._to_plain[key]
            state_dict[prefix + key] = own[stacked][a:b]
        elif key in own:
            state_dict[prefix + key] = own.pop(key)
    for key, t in own.items():  # anything added to the cell since
        if key not in cell._from_plain:
            state_dict[prefix + key] = t


def _stacked_state(cell: BatchedCell, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                   missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    """``load_state_dict`` pre hook: the plain layout's per-op conv weights stacked as the groups hold them."""
    with torch.no_grad():
        _stack_entries(cell, state_dict, prefix)


def _stack_entries(cell: "BatchedCell", tensors: dict, prefix: str) -> None:
    """In ``tensors``, every stacked parameter's members (plain per-op names) replaced by their concatenation in
    row order, where all its members are there and it is not there already."""
    for stacked, keys in cell._from_plain.items():
        if prefix + stacked in tensors or not all(prefix + k in tensors for k in keys):
            continue
        tensors[prefix + stacked] = torch.cat([tensors.pop(prefix + k) for k in keys])


def _relink(cell: BatchedCell, incompatible_keys) -> None:  # load_state_dict(assign=True) put new tensors in place
    cell._relink()


def stacked_named(model: nn.Module, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`plain_named`: tensors keyed as the plain supernet's (momentum buffers, say) keyed by
    ``model``'s parameter names, each stacked parameter's members concatenated in row order."""
    out = dict(tensors)
    for name, module in model.named_modules():
        if isinstance(module, BatchedCell) and module._batched:  # a member missing (no momentum yet): left plain
            _stack_entries(module, out, f"{name}." if name else "")
    return out


def plain_named(model: nn.Module, tensors: Mapping[str, Optional[Tensor]]) -> dict[str, Optional[Tensor]]:
    """Tensors keyed by ``model``'s parameter names (gradients, say) keyed as the plain supernet's: every
    stacked parameter's entry split into its members' rows under their per-op names."""
    out = dict(tensors)
    for name, module in model.named_modules():
        if not (isinstance(module, BatchedCell) and module._batched):
            continue
        p = f"{name}." if name else ""
        for key, (stacked, a, b) in module._to_plain.items():
            t = tensors.get(p + stacked)
            out[p + key] = None if t is None else t[a:b]
        for stacked in module._from_plain:
            out.pop(p + stacked, None)
    return out
