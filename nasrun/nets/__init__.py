"""Networks built from a genotype for retraining, and their size figures."""

from nasrun.nets.cifar import AuxiliaryHeadCIFAR, Cell, NetworkCIFAR
from nasrun.nets.count import count_macs, count_parameters
from nasrun.nets.nb201 import NB201Network

__all__ = ["build_network", "AuxiliaryHeadCIFAR", "Cell", "NB201Network", "NetworkCIFAR", "count_macs", "count_parameters"]


def build_network(genotype, C: int, num_classes: int, layers: int, auxiliary: bool, in_channels: int = 3,
                  input_size: int = 32):
    """The evaluation network of a genotype: one-input cells (NB201) stack in the residual skeleton with
    ``layers`` cells per stage; two-input cells in the DARTS stack of ``layers`` cells."""
    if genotype.inputs == 1:
        return NB201Network(genotype.cells["normal"].edges, C=C, N=layers, num_classes=num_classes,
                            in_channels=in_channels)
    return NetworkCIFAR(genotype, C, num_classes, layers, auxiliary, in_channels=in_channels, input_size=input_size)
