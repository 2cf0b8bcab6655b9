"""The names of the ops nasrun can build, without importing torch (configs and genotype files are checked
against them before any work starts; ``nasrun.spaces.ops.OPS`` builds them, and a test keeps the two equal)."""

OP_NAMES: tuple[str, ...] = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7",
    "dil_conv_3x3", "dil_conv_5x5", "conv_7x1_1x7", "conv_3x1_1x3", "conv_1x1", "conv_3x3", "max_pool_5x5",
    "max_pool_7x7", "nor_conv_1x1", "nor_conv_3x3", "noise",
)

#: The 8 DARTS primitives; this order is the alpha column order of the DARTS space (and the default ``space.ops``).
DARTS_OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
