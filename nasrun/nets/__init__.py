"""Networks built from a genotype for retraining, and their size figures."""

from nasrun.errors import ConfigError
from nasrun.nets.cifar import AuxiliaryHeadCIFAR, Cell, NetworkCIFAR
from nasrun.nets.count import count_macs, count_parameters
from nasrun.nets.imagenet import AuxiliaryHeadImageNet, NetworkImageNet
from nasrun.nets.nb201 import NB201Network

__all__ = ["build_network", "AuxiliaryHeadCIFAR", "AuxiliaryHeadImageNet", "Cell", "NB201Network", "NetworkCIFAR",
           "NetworkImageNet", "NETWORKS", "count_macs", "count_parameters"]

#: The values of ``recipe.network``: the DARTS CIFAR stack (and NB201's skeleton), or the ImageNet one.
NETWORKS = ("cifar", "imagenet")


def build_network(genotype, C: int, num_classes: int, layers: int, auxiliary: bool, in_channels: int = 3,
                  input_size: int = 32, network: str = "cifar"):
    """The evaluation network of a genotype.

    ``network="cifar"``: one-input cells (NB201) stack in the residual skeleton with ``layers`` cells per
    stage; two-input cells in the DARTS CIFAR stack of ``layers`` cells. ``network="imagenet"``: the DARTS
    ImageNet stack (two stems, AvgPool 7x7 head; two-input cells only, 224x224 input).
    """
    if network not in NETWORKS:
        raise ConfigError(f"recipe.network={network!r} is not allowed: one of {', '.join(NETWORKS)}")
    if network == "imagenet":
        return NetworkImageNet(genotype, C, num_classes, layers, auxiliary, in_channels=in_channels,
                               input_size=input_size)
    if genotype.inputs == 1:
        return NB201Network(genotype.cells["normal"].edges, C=C, N=layers, num_classes=num_classes,
                            in_channels=in_channels)
    return NetworkCIFAR(genotype, C, num_classes, layers, auxiliary, in_channels=in_channels, input_size=input_size)
