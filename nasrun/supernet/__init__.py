"""The weight-sharing network searched over: mixed ops, search cells and the supernet."""

from nasrun.supernet.cell import SearchCell, SingleInputCell, num_edges
from nasrun.supernet.mixed_op import MixedOp, channel_shuffle
from nasrun.supernet.network import SuperNet, reduction_indices
from nasrun.supernet.stages import keep_strongest, refine_skips, skip_dropout_rate

__all__ = ["MixedOp", "SearchCell", "SingleInputCell", "SuperNet", "channel_shuffle", "keep_strongest", "num_edges", "reduction_indices",
           "refine_skips", "skip_dropout_rate"]
