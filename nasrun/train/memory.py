"""Refuse a network that cannot fit before allocating it: its parameters, counted on the meta device.

Parameters are counted exactly without memory (``torch.device("meta")``); training needs at least
four copies of them (weights, gradients, momentum, a spare for the optimiser's temporaries). When
even that exceeds the memory of the device, the run is refused with the estimate. Activations
are not estimated: they depend on the batch and are the part a smaller batch can fix.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

from nasrun.errors import ConfigError

BYTES_PER_PARAMETER = 4 * 4  # float32 weights, gradients, momentum, optimiser temporaries


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory on ``device`` (total RAM for the CPU), or None when it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(build: Callable[[], nn.Module], device: torch.device, what: str) -> int:
    """Count the parameters of ``build()`` without allocating them; ConfigError if they cannot fit."""
    with torch.device("meta"):
        params = sum(p.numel() for p in build().parameters())
    need, have = params * BYTES_PER_PARAMETER, device_memory(device)
    if have is not None and need > have:
        raise ConfigError(f"{what} has {params:,} parameters: training them needs at least {need / 2**30:.1f} GiB, "
                          f"more than the {have / 2**30:.1f} GiB of {device}; make it smaller")
    return params
