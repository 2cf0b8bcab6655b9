"""What can be searched: the primitive ops, and the space description every part reads (``Space``).

The names resolve on first use (PEP 562), so checking a config or a genotype file does not import torch.
"""

from importlib import import_module
from typing import Any

_FROM = {"Space": "nasrun.spaces.space", "OP_NAMES": "nasrun.spaces.names"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module(_FROM.get(name, "nasrun.spaces.ops")), name)
    raise AttributeError(f"module 'nasrun.spaces' has no attribute {name!r}")


__all__ = [
    "Space",
    "DARTS_OPS",
    "NB201_OPS",
    "NOISE",
    "OPS",
    "PARAMETER_FREE_OPS",
    "POOLING_OPS",
    "Conv7x1_1x7",
    "ConvKx1_1xK",
    "DilConv",
    "FactorizedReduce",
    "Identity",
    "Noise",
    "NoiseSource",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "drop_path",
]
