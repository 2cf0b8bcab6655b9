"""Model size figures reported with every retrain: parameters and multiply-accumulates."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, include_auxiliary: bool = False) -> int:
    """Number of parameters; by convention the auxiliary head (training-only) is left out."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if include_auxiliary or "auxiliary" not in name
    )


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one image (``input_shape`` = (C, H, W)).

    Counted with torch's FlopCounterMode in eval mode under no_grad, as FLOPs // 2. Only
    matmuls and convolutions are counted (BN, ReLU, pooling and additions are not), the usual
    convention for published multiply-add figures. Because the network runs in eval mode, the
    auxiliary head (training-only) is not counted. A 4-tuple with batch size 1 is also
    accepted. Every module's training flag is restored afterwards.
    """
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    elif len(shape) != 4 or shape[0] != 1:
        raise ValueError(f"input_shape must be (C, H, W) or (1, C, H, W), got {input_shape}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        x = torch.zeros(shape, device=device, dtype=dtype)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
        return int(counter.get_total_flops()) // 2
    finally:
        for m, mode in modes.items():
            m.training = mode
