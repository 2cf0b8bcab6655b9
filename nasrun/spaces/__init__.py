"""What can be searched: the primitive ops of the DARTS-family cell spaces."""

from nasrun.spaces.ops import (
    DARTS_OPS,
    OPS,
    PARAMETER_FREE_OPS,
    POOLING_OPS,
    Conv7x1_1x7,
    DilConv,
    FactorizedReduce,
    Identity,
    ReLUConvBN,
    SepConv,
    Zero,
    drop_path,
)

__all__ = [
    "DARTS_OPS",
    "OPS",
    "PARAMETER_FREE_OPS",
    "POOLING_OPS",
    "Conv7x1_1x7",
    "DilConv",
    "FactorizedReduce",
    "Identity",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "drop_path",
]
