"""NASP's projection of the alphas onto a discrete architecture (prox_C1), used by the supernet and methods.

The supernet's ``alpha_map=argmax`` and the NASP estimator and perturbation all map alphas to one
op per edge with these functions, so the three agree on which op an edge runs.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CELLS = ("normal", "reduce")


def kinds_of(model: nn.Module) -> list[str]:
    """The alpha kinds of a supernet ("normal", "reduce"; one per position for independent cells)."""
    return list(getattr(model, "kinds", CELLS))


def column_ops(model: nn.Module, kind: str) -> list[list[str]]:
    """The op name of every alpha column, per edge (edges may have only some ops: spaces, P-DARTS stages)."""
    alpha = getattr(model, f"alphas_{kind}")
    ops = list(model.ops)
    edge_ops = getattr(model, "edge_ops", None)
    if edge_ops is None:
        return [ops for _ in range(alpha.shape[0])]
    return [[ops[k] for k in row] for row in edge_ops[kind]]


def none_mask(model: nn.Module, kind: str) -> Optional[Tensor]:
    """Boolean ``(edges, columns)`` mask of the alpha columns that are the ``none`` op (None if there are none)."""
    names = column_ops(model, kind)
    mask = torch.tensor([[name == "none" for name in row] for row in names], dtype=torch.bool)
    return mask if bool(mask.any()) else None


def project(alpha: Tensor, exclude: Optional[Tensor] = None) -> Tensor:
    """prox_C1: a one-hot row per edge on its largest alpha (ties: the lower index), without gradient.

    ``exclude``: a boolean mask of entries that cannot be chosen (the ``none`` op).
    """
    scores = alpha.detach()
    if exclude is not None:
        scores = scores.masked_fill(exclude.to(scores.device), float("-inf"))
    return F.one_hot(scores.argmax(-1), alpha.shape[-1]).to(alpha.dtype)


def straight_through(alpha: Tensor, exclude: Optional[Tensor] = None) -> Tensor:
    """The one-hot projection as a value, the identity as a derivative.

    ``alpha - alpha.detach()`` is exactly zero, so the forward sees the one-hot matrix, while the
    gradient with respect to it flows to the continuous alphas unchanged: the proximal step's
    "gradient at the discrete point, applied to the continuous alphas".
    """
    return project(alpha, exclude) + (alpha - alpha.detach())


def discrete_architecture(model: nn.Module, differentiable: bool = False) -> dict[str, Tensor]:
    """prox_C1 of every kind's alphas: one-hot mixing weights (straight-through if ``differentiable``)."""
    out = {}
    for kind in kinds_of(model):
        alpha = getattr(model, f"alphas_{kind}")
        mask = none_mask(model, kind)
        out[kind] = straight_through(alpha, mask) if differentiable else project(alpha, mask)
    return out
