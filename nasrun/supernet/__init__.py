"""The weight-sharing network searched over: mixed ops, search cells and the supernet."""

from nasrun.supernet.cell import SearchCell, num_edges
from nasrun.supernet.mixed_op import MixedOp
from nasrun.supernet.network import SuperNet, reduction_indices

__all__ = ["MixedOp", "SearchCell", "SuperNet", "num_edges", "reduction_indices"]
