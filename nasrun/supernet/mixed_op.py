"""The mixed edge of the search supernet: a weighted sum of every candidate op."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.spaces.ops import OPS, POOLING_OPS, FactorizedReduce, Identity, Zero


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave ``groups`` equal blocks of channels: channel j of block i moves to position j * groups + i."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class MixedOp(nn.Module):
    """``sum_k w_k * op_k(x)`` over the candidate ops, in the order given (the alpha column order).

    The ``none`` op is kept in ``self.ops`` (so indices line up with alpha columns) but is never
    run: its output is zero, so its term adds nothing. Likewise, when the weights carry no gradient,
    ops whose weight is exactly zero are skipped (a one-hot row runs a single op). Its architecture weight still gets the
    exact gradient, because the softmax couples it to every other weight. All BNs are
    non-affine, and pooling ops get a BN of their own so their scale matches the conv ops'.
    """

    def __init__(self, C: int, stride: int, ops: Sequence[str], partial_channels: int = 1) -> None:
        super().__init__()
        if partial_channels < 1 or C % partial_channels:
            raise ValueError(f"partial_channels={partial_channels} must be >= 1 and divide the channel count {C}")
        self.op_names: tuple[str, ...] = tuple(ops)
        self.stride = stride
        self.partial_channels = partial_channels
        C_op = self.C_op = C // partial_channels
        self.ops = nn.ModuleList()
        for name in self.op_names:
            op = OPS[name](C_op, stride, False)
            if name in POOLING_OPS:
                op = nn.Sequential(op, nn.BatchNorm2d(C_op, affine=False))
            self.ops.append(op)
        self._active = [k for k, name in enumerate(self.op_names) if name != "none"]
        # P-DARTS: dropout on the identity skip (stride 1 only); the rate is set per epoch by the schedule
        self._identity = [k for k, name in enumerate(self.op_names) if name == "skip_connect" and stride == 1]
        self.skip_dropout = 0.0
        # GDAS (set by its alpha map): the weights are a straight-through one-hot row and only its op runs;
        # "scalars": the other entries are added as numbers (the NB201 cell), "product": left out
        self.single_op: str | None = None
        # DARTS-: an auxiliary skip beside the mixture, weighted by a coefficient outside the softmax
        self.aux: nn.Module | None = None
        self.aux_beta = 0.0

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """Mix the op outputs with ``weights`` (shape ``[len(ops)]``).

        With partial channels K > 1 only the first C/K channels go through the ops; the rest
        bypass the edge (max-pooled when it strides) and a channel shuffle with K groups follows,
        so the next cell sees other channels in its sampled slice (PC-DARTS).
        """
        K = self.partial_channels
        xa = x if K == 1 else x[:, : x.shape[1] // K]
        if self.single_op is not None and weights.requires_grad:
            return self._bypass(x, self._with_aux(xa, self._chosen(xa, weights)))
        return self._bypass(x, self._with_aux(xa, self._mixed(xa, weights)))

    def _mixed(self, xa: Tensor, weights: Tensor) -> Tensor:
        """The weighted sum of the edge's ops on ``xa`` (a fused edge computes it with shared work)."""
        return self._mix(xa, weights, self._running(weights))

    def add_aux_skip(self) -> None:
        """DARTS-' auxiliary skip: the identity, or (striding) a learnable FactorizedReduce without affine BN
        (Meituan-AutoML/DARTS-, src/search/model_search.py)."""
        self.aux = Identity() if self.stride == 1 else FactorizedReduce(self.C_op, self.C_op, affine=False)

    def _with_aux(self, xa: Tensor, out: Tensor) -> Tensor:
        """``out + beta * aux(x)`` with DARTS-' auxiliary skip, else ``out``."""
        return out if self.aux is None else out + self.aux_beta * self.aux(xa)

    def _chosen(self, xa: Tensor, weights: Tensor) -> Tensor:
        """``h_i * op_i(x)`` for the row's one-hot entry i, plus (``scalars``) every other ``h_k`` as a number:
        D-X-Y/AutoDL-Projects, xautodl/models/cell_searchs/search_cells.py (NB201 cell and NASNet MixedOp)."""
        i = int(weights.detach().argmax())
        out = self._mix(xa, weights, [i] if i in self._active else [])
        if self.single_op == "scalars":
            for k in range(len(self.op_names)):
                if k != i:
                    out = out + weights[k]
        return out

    def _running(self, weights: Tensor) -> list[int]:
        """The ops to run: every op but ``none``; with weights that carry no gradient, only those weighted non-zero."""
        active = self._active
        if not weights.requires_grad:
            # a fixed architecture (NASP's one-hot weight step, evaluation): ops weighted exactly
            # zero add nothing, so they are not run (and their weights get no gradient)
            nonzero = (weights != 0).tolist()
            active = [k for k in active if nonzero[k]]
        return active

    def _mix(self, xa: Tensor, weights: Tensor, active: Sequence[int]) -> Tensor:
        """``sum_k weights[k] * op_k(xa)`` over ``active``, op by op (zeros when none is active)."""
        out: Tensor | None = None
        for k in active:
            y = self.ops[k](xa)
            if self.skip_dropout > 0 and self.training and k in self._identity:
                y = F.dropout(y, self.skip_dropout, training=True)
            term = weights[k] * y
            out = term if out is None else out + term
        if out is None:  # an edge whose only candidate is `none`
            out = Zero(self.stride)(xa)
        return out

    def _bypass(self, x: Tensor, out: Tensor) -> Tensor:
        """Partial channels: the ops' output beside the channels that bypassed them, shuffled (K = 1: ``out``)."""
        K = self.partial_channels
        if K == 1:
            return out
        xb = x[:, x.shape[1] // K :]
        if self.stride == 2:
            xb = F.max_pool2d(xb, 2, 2)
        return channel_shuffle(torch.cat([out, xb], dim=1), K)
