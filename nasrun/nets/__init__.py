"""Networks built from a genotype for retraining, and their size figures."""

from nasrun.nets.cifar import AuxiliaryHeadCIFAR, Cell, NetworkCIFAR
from nasrun.nets.count import count_macs, count_parameters

__all__ = ["AuxiliaryHeadCIFAR", "Cell", "NetworkCIFAR", "count_macs", "count_parameters"]
