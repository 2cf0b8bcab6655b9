"""The evaluation network of a genotype for retraining on ImageNet, mobile setting (quark0/darts NetworkImageNet).

Two stems take a 224x224 image down to 28x28 (three stride-2 3x3 convolutions), then the DARTS stack
of cells (nets/cifar.py's Cell; reductions at layers//3 and 2*layers//3: 14x14 and 7x7), then an
AvgPool 7x7 and a linear classifier, as quark0/darts cnn/model.py ``NetworkImageNet``.
"""

from __future__ import annotations

from torch import Tensor, nn

from nasrun.errors import ConfigError
from nasrun.genotype.genotype import Genotype
from nasrun.nets.cifar import stack_cells, stack_reductions

#: The side of the last cell's maps: the head is a fixed AvgPool 7x7 (as in DARTS), then a linear layer.
FINAL_MAP = 7


def _half(n: int) -> int:
    """A 3x3 convolution with stride 2 and padding 1 keeps ceil(n/2) pixels."""
    return (n + 1) // 2


class AuxiliaryHeadImageNet(nn.Module):
    """Classifier on the output of cell 2*layers//3 (7x7 maps at 224x224 input), training only.

    ReLU -> AvgPool 5x5/2 (7x7 -> 2x2) -> 1x1 conv (128) -> BN -> ReLU -> 2x2 conv (768, -> 1x1) -> ReLU
    -> Linear. The BatchNorm after the 2x2 conv is **deliberately omitted**: DARTS left it out by a
    typo and kept it out "for consistency with the experiments in the paper" (quark0/darts ``cnn/model.py``).
    """

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            # no nn.BatchNorm2d(768) here, on purpose (see the class docstring)
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class NetworkImageNet(nn.Module):
    """Stems, ``layers`` cells from ``genotype`` (reductions at layers//3 and 2*layers//3), AvgPool 7x7, linear.

    stem0: conv3x3/2 (C/2) -> BN -> ReLU -> conv3x3/2 (C) -> BN; stem1: ReLU -> conv3x3/2 (C) -> BN. The
    first cell gets stem0's output as state 0 and stem1's as state 1, and treats state 0 as coming from
    a reduction (FactorizedReduce). Same interface as NetworkCIFAR: ``drop_path_prob`` (set by the
    trainer), ``auxiliary_enabled`` / ``auxiliary_note``, and ``forward`` returns ``(logits, logits_aux)``
    with ``logits_aux`` None unless training with the auxiliary head. Needs 224x224 input (any size
    whose last maps are 7x7); only genotypes of two-input (DARTS-stacked) cells.
    """

    def __init__(
        self,
        genotype: Genotype,
        C: int,
        num_classes: int,
        layers: int,
        auxiliary: bool,
        in_channels: int = 3,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        if genotype.inputs != 2:
            raise ConfigError(
                f"recipe.network=imagenet is not allowed for a genotype of {genotype.inputs}-input cells "
                f"(space {genotype.space}): the ImageNet network stacks two-input DARTS cells; retrain it with "
                "recipe.network=cifar (e.g. recipe=nb201)"
            )
        if C < 2:
            raise ConfigError(f"recipe.C={C} is not allowed for recipe.network=imagenet: at least 2 "
                              "(the first stem convolution has C/2 channels)")
        stack_reductions(genotype, layers)  # checks the number of cells
        stems = _half(_half(_half(input_size)))
        if stems % 4 != 0 or stems // 4 != FINAL_MAP:
            raise ConfigError(
                f"dataset.image_size={input_size} is not allowed for recipe.network=imagenet: the stems reduce the "
                f"image 8 times ({input_size} -> {stems}), the two reduction cells 4 times more, and the AvgPool "
                f"{FINAL_MAP}x{FINAL_MAP} head needs {FINAL_MAP}x{FINAL_MAP} final maps; use 224 (as dataset=imagenet)"
            )
        self.genotype = genotype
        self.layers = layers
        self.drop_path_prob: float = 0.0
        self.aux_index = 2 * layers // 3
        # the head sits after the second reduction cell: 7x7 maps, what its 5x5/2 pool and 2x2 conv expect
        self.auxiliary_enabled = bool(auxiliary)
        self.auxiliary_note: str | None = None

        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=False),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.cells, C_p, C_aux = stack_cells(genotype, layers, C, C, C, reduction_prev=True,
                                             aux_index=self.aux_index)
        self.auxiliary_head = AuxiliaryHeadImageNet(C_aux, num_classes) if self.auxiliary_enabled else None
        self.global_pooling = nn.AvgPool2d(FINAL_MAP)
        self.classifier = nn.Linear(C_p, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        logits_aux = None
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux
