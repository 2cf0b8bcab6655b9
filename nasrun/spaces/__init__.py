"""What can be searched: the primitive ops, and the space description every part reads (``Space``)."""

from nasrun.spaces.ops import (
    DARTS_OPS,
    NB201_OPS,
    NOISE,
    OPS,
    PARAMETER_FREE_OPS,
    POOLING_OPS,
    Conv7x1_1x7,
    ConvKx1_1xK,
    DilConv,
    FactorizedReduce,
    Identity,
    Noise,
    NoiseSource,
    ReLUConvBN,
    SepConv,
    Zero,
    drop_path,
)
from nasrun.spaces.space import Space

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
