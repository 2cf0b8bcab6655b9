"""The mixed edge of the search supernet: a weighted sum of every candidate op."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from nasrun.spaces.ops import OPS, POOLING_OPS, Zero


class MixedOp(nn.Module):
    """``sum_k w_k * op_k(x)`` over the candidate ops, in the order given (the alpha column order).

    The ``none`` op is kept in ``self.ops`` (so indices line up with alpha columns) but is never
    run: its output is zero, so its term adds nothing. Likewise, when the weights carry no gradient,
    ops whose weight is exactly zero are skipped (a one-hot row runs a single op). Its architecture weight still gets the
    exact gradient, because the softmax couples it to every other weight. All BNs are
    non-affine, and pooling ops get a BN of their own so their scale matches the conv ops'.
    """

    def __init__(self, C: int, stride: int, ops: Sequence[str]) -> None:
        super().__init__()
        self.op_names: tuple[str, ...] = tuple(ops)
        self.stride = stride
        self.ops = nn.ModuleList()
        for name in self.op_names:
            op = OPS[name](C, stride, False)
            if name in POOLING_OPS:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self.ops.append(op)
        self._active = [k for k, name in enumerate(self.op_names) if name != "none"]

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """Mix the op outputs with ``weights`` (shape ``[len(ops)]``)."""
        active = self._active
        if not weights.requires_grad:
            # a fixed architecture (NASP's one-hot weight step, evaluation): ops weighted exactly
            # zero add nothing, so they are not run (and their weights get no gradient)
            nonzero = (weights != 0).tolist()
            active = [k for k in active if nonzero[k]]
        out: Tensor | None = None
        for k in active:
            term = weights[k] * self.ops[k](x)
            out = term if out is None else out + term
        if out is None:  # an edge whose only candidate is `none`
            out = Zero(self.stride)(x)
        return out
