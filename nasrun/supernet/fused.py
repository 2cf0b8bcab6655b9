"""The fused mixed edge: the plain :class:`MixedOp`'s modules and parameters, fewer and larger kernels.

:class:`FusedMixedOp` has exactly the submodules, parameter names and buffers of the plain op (its
``state_dict`` is the plain op's, both ways); only ``forward`` differs. Every call builds the fused
computation from the per-op parameters (concatenating small weight tensors), so nothing is cached
between calls that could drift from the parameters.

What is fused, for the DARTS ops present on the edge (``none`` never runs):

- one ReLU of the input, shared by ``sep_conv_3x3/5x5`` and ``dil_conv_3x3/5x5`` (their first op);
- the first depthwise convs of the separable convs as one depthwise conv (kernel 5, dilation 1; a
  3x3 kernel is zero-padded to 5x5 on the fly with ``F.pad``, so the structural zeros are not
  parameters and get no gradient), and those of the dilated convs likewise (kernel 5, dilation 2);
  the ReLU'd input is repeated once per member, so channel ``j * C + c`` is member j's channel c;
- the pointwise convs of each group as one grouped 1x1 conv (groups = ops in the group), the
  separable convs' first non-affine BNs as one BN over the concatenated channels, and their second
  stage (ReLU, depthwise, pointwise) fused the same way;
- the last BN of every conv op and the pooling ops' BNs as one BN over the concatenated pre-BN
  outputs, whose affine weight is each op's mixing weight repeated over its channels: its output is
  already ``w_k * y_k`` per block, and one sum over the op axis mixes them (measured faster than a
  plain BN followed by a weighted sum, an einsum, or accumulating the terms).

The pooling itself (the pooling modules, on the same input), the skip connection (identity or
FactorizedReduce) and any op the fused path does not know (NASP's and NAS-Bench-201's convs, R-DARTS'
noise) run as in the plain op and are added as ``w_k * y_k``; the P-DARTS skip dropout, partial
channels (PC-DARTS) and the channel shuffle are the plain op's. Weights that carry no gradient with an
active op weighted exactly zero (NASP's one-hot step) take the plain path, which runs only the ops
weighted non-zero.

On the CPU the fused path runs channels-last (oneDNN's depthwise convs, their weight gradients above
all, and the pooling kernels are several times faster so) and computes the dilated depthwise conv as a
dilation-1 conv on the input's parity phases (``_dilated_on_cpu``: the same terms). Other devices run
the same computation in the input's layout. The results agree to rounding either way.

BatchNorm statistics: a BN over concatenated channels computes every channel's batch statistics
as the separate BNs do. So that it also updates the running statistics of the separate BNs, the
per-op ``running_mean`` / ``running_var`` buffers are views into one tensor per fused BN (and every
fused BN's ``num_batches_tracked`` a view into one counter per edge): ``F.batch_norm`` updates the
concatenated tensor in place, i.e. the per-op buffers, and the edge adds 1 to its counter. The views
are made at construction, and again after ``.to()`` / ``.double()`` & co. (``_apply``) or
``load_state_dict(assign=True)`` put new tensors in place; a forward that finds a buffer replaced
some other way takes the plain path, which is exact. The training flag is the edge's own.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.spaces.ops import POOLING_OPS
from nasrun.supernet.mixed_op import MixedOp

#: Ops the fused path knows: the depthwise-separable and the dilated convs of the DARTS space.
SEP_OPS = ("sep_conv_3x3", "sep_conv_5x5")
DIL_OPS = ("dil_conv_3x3", "dil_conv_5x5")


@dataclass
class _ConvStage:
    """Depthwise convs of the members as one (kernels zero-padded to ``kernel``), then their pointwise convs
    as one grouped 1x1 conv. The input is op-major: channel ``j * C + c`` feeds member j (for the first
    stage: the shared ReLU'd input, repeated once per member)."""

    dw: list[nn.Conv2d]
    pw: list[nn.Conv2d]
    kernel: int
    stride: int
    padding: int
    dilation: int

    def weights(self) -> tuple[Tensor, Tensor]:
        if len(self.dw) == 1:
            return self.dw[0].weight, self.pw[0].weight
        return (torch.cat([_pad_kernel(c.weight, self.kernel) for c in self.dw]),
                torch.cat([c.weight for c in self.pw]))

    def __call__(self, inp: Tensor, cpu: bool = False) -> Tensor:
        dw, pw = self.weights()
        if cpu and self.dilation == 2:
            d = _dilated_on_cpu(inp, dw, self.stride, self.padding)
        else:
            d = F.conv2d(inp, dw, None, self.stride, self.padding, self.dilation, inp.shape[1])
        return F.conv2d(d, pw, None, 1, 0, 1, len(self.pw))


def _dilated_on_cpu(x: Tensor, w: Tensor, stride: int, padding: int) -> Tensor:
    """The depthwise conv with dilation 2 and ``padding = kernel - 1``, as a conv with dilation 1.

    A CPU depthwise conv with dilation 2 (its weight gradient above all) is several times slower than
    one with dilation 1. The dilated taps of an output pixel all lie on the input's pixels of its own
    parity, so: stride 2 reads only the even-even pixels (``x[..., ::2, ::2]``); stride 1 splits the
    input into its four parity phases (``pixel_unshuffle``, each channel's kernel repeated per phase),
    convolves each phase with dilation 1 and interleaves them back. Same terms, same result.
    """
    C, h, w_ = x.shape[1], x.shape[2], x.shape[3]
    if stride == 2:
        return F.conv2d(x[:, :, ::2, ::2], w, None, 1, padding // 2, 1, C)
    if stride == 1 and h % 2 == 0 and w_ % 2 == 0:
        u = F.pixel_unshuffle(x, 2)  # channel c * 4 + phase
        w4 = w.repeat(1, 4, 1, 1).view(4 * C, 1, *w.shape[2:])
        return F.pixel_shuffle(F.conv2d(u, w4, None, 1, padding // 2, 1, 4 * C), 2)
    return F.conv2d(x, w, None, stride, padding, 2, C)


def _cpu_layout(x: Tensor) -> bool:
    """Whether to use the CPU layouts: channels-last tensors (oneDNN's depthwise convs and pooling are
    several times faster so) and dilation-1 convs for the dilated ones (``_dilated_on_cpu``)."""
    return x.device.type == "cpu"


def _pad_kernel(w: Tensor, kernel: int) -> Tensor:
    p = (kernel - w.shape[-1]) // 2
    return w if p == 0 else F.pad(w, (p, p, p, p))


class _BNGroup:
    """Non-affine BNs applied as one over concatenated channels; their running stats are views into ``mean``/``var``."""

    def __init__(self, bns: list[nn.BatchNorm2d]) -> None:
        self.bns = bns
        self.mean: Tensor | None = None
        self.var: Tensor | None = None

    def link(self) -> None:
        self.mean = torch.cat([b.running_mean for b in self.bns])
        self.var = torch.cat([b.running_var for b in self.bns])
        C = self.bns[0].num_features
        for i, b in enumerate(self.bns):
            b.running_mean = self.mean[i * C : (i + 1) * C]
            b.running_var = self.var[i * C : (i + 1) * C]

    def __call__(self, x: Tensor, training: bool, weight: Tensor | None = None) -> Tensor:
        b = self.bns[0]
        if x.dtype in (torch.bfloat16, torch.float16):  # precision=bf16: statistics in fp32, as every BN of a run
            x = x.float()
        if training and _GLOBAL_BN.get():
            from nasrun.parallel.distributed import rank_batch_norm

            return rank_batch_norm(x, self.mean, self.var, weight, None, b.momentum, b.eps)
        return F.batch_norm(x, self.mean, self.var, weight, None, training, b.momentum, b.eps)


_GLOBAL_BN: ContextVar[bool] = ContextVar("nasrun_fused_global_batch_norm", default=False)


@contextmanager
def global_batch_norm() -> Iterator[None]:
    """Inside, fused BatchNorms in training mode normalise over every torchrun rank's batch (``search.sync_bn``).

    The plain supernet gets this by swapping its BatchNorm modules (:func:`nasrun.parallel.distributed.sync_batchnorm`);
    a fused op normalises many BNs at once with their buffers, so it is told instead.
    """
    token = _GLOBAL_BN.set(True)
    try:
        yield
    finally:
        _GLOBAL_BN.reset(token)


class BufferLinks:
    """The running statistics of some :class:`_BNGroup` s as views into one tensor per group, and every BN's
    ``num_batches_tracked`` a view into one counter vector: one in-place update per group moves them all.

    ``linked`` says whether every buffer is still the view ``link`` put there (``.to()`` & co. and
    ``load_state_dict(assign=True)`` put new tensors in place; ``link`` again then, values kept).
    """

    def __init__(self, groups: list[_BNGroup]) -> None:
        self.groups = groups
        self.bns = [b for g in groups for b in g.bns]
        self.counter: Tensor | None = None
        self.views: list | None = None

    def link(self) -> None:
        with torch.no_grad():
            for group in self.groups:
                group.link()
            self.counter = torch.stack([b.num_batches_tracked for b in self.bns])
            for i, b in enumerate(self.bns):
                b.num_batches_tracked = self.counter[i]
        #: (buffer dict, name, the view put there): a buffer is still linked while it is that very tensor
        self.views = [(b._buffers, name, b._buffers[name]) for b in self.bns
                      for name in ("running_mean", "running_var", "num_batches_tracked")]

    def linked(self) -> bool:
        views = self.views
        return views is not None and all(d.get(name) is t for d, name, t in views)

    def count(self) -> None:
        """One more batch for every linked BN (what each BN's own forward does in training mode)."""
        self.counter.add_(1)


def _fits(stages: Sequence[_ConvStage | None], bns: Sequence[nn.Module], C: int) -> bool:
    """The modules are what the fused plan assumes (the ops of nasrun.spaces.ops); anything else stays plain."""
    ok = True
    for stage in stages:
        if stage is None:
            continue
        for dw, pw in zip(stage.dw, stage.pw):
            k = dw.kernel_size[0]
            ok &= (dw.kernel_size == (k, k) and (stage.kernel - k) % 2 == 0 and dw.stride == (stage.stride,) * 2
                   and dw.dilation == (stage.dilation,) * 2 and dw.groups == dw.in_channels == C
                   and dw.padding == (stage.dilation * (k - 1) // 2,) * 2 and dw.bias is None
                   and pw.kernel_size == (1, 1) and pw.groups == 1 and pw.bias is None
                   and pw.in_channels == pw.out_channels == C)
    for b in bns:
        ref = bns[0]
        ok &= (isinstance(b, nn.BatchNorm2d) and not b.affine and b.track_running_stats and b.momentum is not None
               and b.momentum == ref.momentum and b.eps == ref.eps and b.num_features == C)
    return bool(ok)


def _relink(module: "FusedMixedOp", incompatible_keys) -> None:  # a load_state_dict post hook
    if not module._linked():  # load_state_dict(assign=True) put new tensors in place
        module._link()


class FusedMixedOp(MixedOp):
    """A :class:`MixedOp` whose forward fuses the work of its DARTS ops (see the module docstring).

    Same constructor, submodules, parameters, buffers and results as the plain op.
    """

    def __init__(self, C: int, stride: int, ops: Sequence[str], partial_channels: int = 1) -> None:
        super().__init__(C, stride, ops, partial_channels)
        self._C_op = C // partial_channels
        self._plan_edge()
        self._index: dict[torch.device, Tensor] = {}
        self._link()
        self.register_load_state_dict_post_hook(_relink)

    # ------------------------------------------------------------------ the plan (fixed per edge)
    def _plan_edge(self) -> None:
        names = self.op_names
        sep = [k for k in self._active if names[k] in SEP_OPS]
        dil = [k for k in self._active if names[k] in DIL_OPS]
        pools = [k for k in self._active if names[k] in POOLING_OPS]
        self._plain_ops = [k for k in self._active if k not in sep + dil + pools]
        #: the ops whose last BN is the final, weighted BN, in its block order
        self._final = sep + dil + pools
        self._pools = pools
        s = self.stride
        self._sep1 = self._sep2 = self._dil = None
        bn1: list[nn.BatchNorm2d] = []
        final_bns: list[nn.BatchNorm2d] = []
        if sep:
            seqs = [self.ops[k].op for k in sep]
            kernel = max(q[1].kernel_size[0] for q in seqs)
            self._sep1 = _ConvStage([q[1] for q in seqs], [q[2] for q in seqs], kernel, s, (kernel - 1) // 2, 1)
            self._sep2 = _ConvStage([q[5] for q in seqs], [q[6] for q in seqs], kernel, 1, (kernel - 1) // 2, 1)
            bn1 = [q[3] for q in seqs]
            final_bns += [q[7] for q in seqs]
        if dil:
            seqs = [self.ops[k].op for k in dil]
            kernel = max(q[1].kernel_size[0] for q in seqs)
            self._dil = _ConvStage([q[1] for q in seqs], [q[2] for q in seqs], kernel, s, kernel - 1, 2)
            final_bns += [q[3] for q in seqs]
        final_bns += [self.ops[k][1] for k in pools]
        self._bn1 = _BNGroup(bn1) if bn1 else None
        self._bnF = _BNGroup(final_bns) if final_bns else None
        self._bns = bn1 + final_bns
        self._links = BufferLinks([g for g in (self._bn1, self._bnF) if g is not None])
        self._check_plan()

    def _check_plan(self) -> None:
        self._fusable = bool(self._final) and _fits((self._sep1, self._sep2, self._dil), self._bns, self._C_op)

    # ------------------------------------------------------------------ running statistics as views
    def _link(self) -> None:
        """Make the fused BNs' running statistics views into one tensor per fused BN (values kept)."""
        if self._fusable:
            self._links.link()

    def _linked(self) -> bool:
        """Whether every fused BN buffer is still the view ``_link`` made (replaced ones are new tensors)."""
        return self._links.linked()

    def _apply(self, fn, recurse=True):  # .to(), .double(), .cuda(), ...: the buffers are new tensors
        out = super()._apply(fn, recurse)
        if not self._linked():
            self._link()
        return out

    # ------------------------------------------------------------------ forward
    def _mixed(self, xa: Tensor, weights: Tensor) -> Tensor:
        active = self._running(weights)
        if self._fusable and len(active) == len(self._active) and self._linked():
            return self._fused(xa, weights)
        return self._mix(xa, weights, active)

    def _channel_index(self, device: torch.device) -> Tensor:
        """The mixing weight's index of every channel of the final BN (op k's C channels: k)."""
        idx = self._index.get(device)
        if idx is None:
            idx = torch.tensor([k for k in self._final for _ in range(self._C_op)], device=device)
            self._index[device] = idx
        return idx

    def _fused(self, xa: Tensor, weights: Tensor) -> Tensor:
        training = self.training
        cpu = _cpu_layout(xa)
        xs = xa.contiguous(memory_format=torch.channels_last) if cpu else xa
        blocks: list[Tensor] = []  # pre-BN outputs of the final BN, in self._final order
        if self._sep1 is not None or self._dil is not None:
            r = F.relu(xs)
            repeated: dict[int, Tensor] = {}  # the shared input, once per member of a group (one copy per size)
            if self._sep1 is not None:
                s = self._sep1(_repeat(r, len(self._sep1.dw), repeated))
                s = F.relu(self._bn1(s, training))
                blocks.append(self._sep2(s))
            if self._dil is not None:
                blocks.append(self._dil(_repeat(r, len(self._dil.dw), repeated), cpu))
        blocks += [self.ops[k][0](xs) for k in self._pools]
        pre = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
        scale = weights[self._channel_index(weights.device)]
        y = self._bnF(pre, training, scale)  # = w_k * BN_k(op_k) per block
        if training:
            self._links.count()
        n = len(self._final)
        out = y if n == 1 else y.view(y.shape[0], n, self._C_op, *y.shape[2:]).sum(1)
        for k in self._plain_ops:
            t = self.ops[k](xa)
            if self.skip_dropout > 0 and training and k in self._identity:
                t = F.dropout(t, self.skip_dropout, training=True)
            out = out + weights[k] * t
        return out


def _repeat(r: Tensor, m: int, cache: dict[int, Tensor]) -> Tensor:
    """``m`` copies of ``r`` along channels (in ``r``'s memory format), made once per ``m``."""
    if m == 1:
        return r
    if m not in cache:
        cache[m] = torch.cat([r] * m, dim=1)
    return cache[m]
