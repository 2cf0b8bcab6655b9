"""Typed schemas of every config group, and the validation that runs before any work starts (composition is
in :mod:`nasrun.config.compose`).

Hydra checks types while composing; ranges and cross-field rules are checked here, in
``__post_init__``, which ``OmegaConf.to_object`` runs for every node. Every check raises
:class:`ConfigError` with the full key, the bad value and what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from nasrun.config.checks import (
    MAX_SEED,
    check,
    finite,
    finite_list,
    int_range,
    non_negative,
    one_of,
    positive,
    positive_int,
    sgd,
    shorten,
)
from nasrun.config.compose_errors import CONFIG_MODULE, one_line
from nasrun.errors import ConfigError
from nasrun.config.options import (
    STORED_GROUPS,
    FirstOrderConf,
    NoBenchmarkConf,
    NoPerturbationConf,
    ArgmaxSelectionConf,
    SingleConf,
    SoftmaxConf,
    owners_of,
)
from nasrun.data.names import DATASET_NAMES
from nasrun.spaces.names import DARTS_OPS

#: The DARTS space's ops, in alpha column order (the default ``space.ops``).
DARTS_PRIMITIVES = list(DARTS_OPS)
CIFAR10_MEAN = [0.49139968, 0.48215827, 0.44653124]
CIFAR10_STD = [0.24703233, 0.24348505, 0.26158768]

DATASETS = DATASET_NAMES
AUGMENTATIONS = ("crop", "flip")
#: Largest sizes a config may ask for: far above any real use, low enough that building never hangs.
MAX_CHANNELS = 4096
MAX_CELLS = 1000
MAX_NODES = 32
MAX_BATCH = 1 << 20
#: ``search.compile`` values (nasrun.search.capture.MODES): eager, torch.compile, CUDA graphs.
COMPILE_MODES = ("off", "compile", "graph")
#: ``precision`` values: fp32; bf16 autocast (BatchNorm, the loss and the estimators' second-order terms in fp32);
#: fp64, float64 everywhere (to check a trajectory's exactness to 1e-8 and beyond; allowed on a GPU with a
#: warning, as a slow but correct run: most GPUs compute float64 at a small fraction of their float32 rate).
PRECISIONS = ("fp32", "bf16", "fp64")


@dataclass
class SpaceConf:
    """What can be searched, as data (``nasrun.spaces.Space`` reads it; docs/spaces.md).

    ``ops`` is the vocabulary: its order is the alpha column order. ``cell_ops`` gives a cell type
    ("normal", "reduce") its own op list; ``edge_ops`` gives every edge of a cell type its own list
    (R-DARTS S1). ``inputs`` cell inputs (2 for DARTS, 1 for NB201) feed ``nodes`` intermediate
    nodes; node i takes an edge from every earlier state. ``derivation``: ``top_k`` keeps the
    ``edges_per_node`` strongest incoming edges by their strongest non-``none`` op; ``argmax``
    keeps every edge with its argmax op, ``none`` allowed (NB201); ``searched`` keeps every edge
    whose strongest op outweighs ``none`` (at least one per node). ``cells``: one ``shared``
    normal and reduction cell, or an ``independent`` cell per position. ``skeleton``: ``darts``
    stacking (reductions at 1/3 and 2/3) or ``nb201`` (stages of cells joined by residual blocks).
    """

    name: str = "darts"  # the space's label (run folder names, genotype.json)
    # the op vocabulary; its order is the alpha column order
    ops: list[str] = field(default_factory=lambda: list(DARTS_PRIMITIVES))
    cell_ops: Optional[dict[str, list[str]]] = None  # an op list per cell type (normal, reduce), or null
    edge_ops: Optional[dict[str, list[list[str]]]] = None  # an op list per edge of a cell type, or null
    nodes: int = 4  # intermediate nodes per cell
    inputs: int = 2  # cell inputs: 2 (DARTS stack), 1 (NB201)
    derivation: str = "top_k"  # top_k | argmax | searched
    edges_per_node: int = 2  # k of top_k
    cells: str = "shared"  # shared | independent (a cell per position)
    skeleton: str = "darts"  # darts | nb201
    description: str = ""  # one line for people

    def __post_init__(self) -> None:
        from nasrun.spaces.space import check_space

        check(bool(re.fullmatch(r"[A-Za-z0-9._+-]{1,60}", self.name)), "space.name", self.name,
              "1 to 60 letters, digits or . _ + - (it names run folders)")
        check_space(self)


@dataclass
class DatasetConf:
    """Where the images come from, their shape, normalisation, augmentation, size and input pipeline.

    ``subset`` shrinks the training and the test set alike for quick runs: a float in (0, 1] keeps
    that fraction of every class, an integer >= 1 that many images per class (seeded by
    ``split_seed``). ``subset_classes=K`` keeps the first K classes only and sets ``num_classes``
    to K. ``loader``: ``device`` keeps the uint8 images on the run's device and augments batches
    there; ``torch`` is a DataLoader with ``workers`` processes and (on CUDA) pinned memory, the
    only choice for imagenet, whose ``train_augment`` options are resized_crop, flip, color_jitter.
    """

    name: str = "cifar10"  # which loader reads the images
    root: str = "data"  # where the image files are ($NASRUN_DATA or data)
    download: bool = False  # download with torchvision (needs internet)
    in_channels: int = 3  # image channels
    image_size: int = 32  # image side in pixels
    num_classes: int = 10  # classes (subset_classes lowers it)
    # per-channel mean (null: computed on the training split)
    mean: Optional[list[float]] = field(default_factory=lambda: list(CIFAR10_MEAN))
    # per-channel std (null: computed on the training split)
    std: Optional[list[float]] = field(default_factory=lambda: list(CIFAR10_STD))
    train_augment: list[str] = field(default_factory=lambda: ["crop", "flip"])  # augmentations of training images
    crop_padding: int = 4  # padding of the random crop
    augment_val: bool = False  # augment the search-val half too
    search_split: float = 0.5  # fraction of the training set the search trains weights on
    split_seed: int = 0  # seeds test split (digits) and subsets
    test_fraction: float = 0.2  # test share where there is no official test split
    num_train: int = 512  # synthetic: training images
    num_test: int = 128  # synthetic: test images
    subset: Any = None  # per class: a fraction in (0, 1] or a count; null = all
    subset_classes: Optional[int] = None  # keep the first K classes
    loader: str = "device"  # device (batches on the run's device) | torch (DataLoader)
    workers: int = 2  # DataLoader workers (loader=torch)
    pin_memory: bool = True  # pinned memory on CUDA (loader=torch)

    def __post_init__(self) -> None:
        one_of("dataset.name", self.name, DATASETS)
        files = self.name == "imagenet"  # decoded from image files on demand, not held in memory
        int_range("dataset.in_channels", self.in_channels, 1, 64)
        int_range("dataset.image_size", self.image_size, 1, 4096)
        int_range("dataset.num_classes", self.num_classes, 2, 100_000)
        for key in ("mean", "std"):
            value = getattr(self, key)
            check(value is None or len(value) == self.in_channels, f"dataset.{key}", value,
                  f"null (computed from the data) or one value per channel ({self.in_channels})")
            if value is not None:
                finite_list(f"dataset.{key}", value)
        if self.std is not None:
            check(all(s > 0 for s in self.std), "dataset.std", self.std, "every value must be > 0")
        augmentations = ("resized_crop", "flip", "color_jitter") if files else AUGMENTATIONS
        for aug in self.train_augment:
            check(aug in augmentations, "dataset.train_augment", aug,
                  f"one of {', '.join(augmentations)} for dataset {self.name}")
        int_range("dataset.crop_padding", self.crop_padding, 0, 1024)
        one_of("dataset.loader", self.loader, ("device", "torch"))
        check(isinstance(self.workers, int) and 0 <= self.workers <= 256, "dataset.workers", self.workers,
              "must be an integer from 0 to 256 (0 loads in the main process)")
        if files:
            self._check_imagenet()
        self._check_subset()
        check(0 < self.search_split < 1, "dataset.search_split", self.search_split, "must be in (0, 1)")
        check(0 < self.test_fraction < 1, "dataset.test_fraction", self.test_fraction, "must be in (0, 1)")
        int_range("dataset.split_seed", self.split_seed, 0, MAX_SEED)
        positive_int("dataset.num_train", self.num_train, hi=10**7)
        positive_int("dataset.num_test", self.num_test, hi=10**7)

    def _check_imagenet(self) -> None:
        check(self.loader == "torch", "dataset.loader", self.loader,
              "torch for imagenet (its images are decoded from files by DataLoader workers)")
        check(self.in_channels == 3, "dataset.in_channels", self.in_channels, "3 for imagenet (RGB)")
        check(self.mean is not None and self.std is not None, "dataset.mean/std", [self.mean, self.std],
              "given for imagenet (they cannot be computed from files on the fly)")
        check(not self.download, "dataset.download", self.download,
              "false for imagenet: it cannot be downloaded automatically (see docs/datasets.md)")

    def _check_subset(self) -> None:
        amount = self.subset
        check(
            amount is None
            or (isinstance(amount, int) and not isinstance(amount, bool) and 1 <= amount <= 10**9)
            or (isinstance(amount, float) and 0 < amount <= 1),
            "dataset.subset",
            amount,
            "null, a fraction of each class in (0, 1] (e.g. 0.1) or a count per class >= 1 (e.g. 100)",
        )
        if self.subset_classes is not None:
            check(2 <= self.subset_classes <= self.num_classes, "dataset.subset_classes", self.subset_classes,
                  f"null or an integer from 2 to dataset.num_classes ({self.num_classes})")
            self.num_classes = self.subset_classes  # the network gets one output per kept class


@dataclass
class MethodConf:
    """A method preset's label (run-folder names, logs, reports); its choices are the axis groups."""

    name: str = "darts"

    def __post_init__(self) -> None:
        check(bool(re.fullmatch(r"[A-Za-z0-9._+-]{1,60}", self.name)), "method.name", self.name,
              "1 to 60 letters, digits or . _ + - (it names run folders)")


@dataclass
class SearchConf:
    """The bilevel loop's settings (DARTS paper defaults)."""

    epochs: int = 50  # search epochs (per stage with schedule=progressive)
    batch_size: int = 64  # images per weight step (and per architecture step)
    lr: float = 0.025  # weight SGD learning rate, cosine to lr_min
    lr_min: float = 0.001  # floor of the cosine schedule
    momentum: float = 0.9  # weight SGD momentum
    nesterov: bool = False  # Nesterov momentum for the weight SGD (GDAS, SNAS on NB201)
    weight_decay: float = 3e-4  # weight SGD weight decay
    grad_clip: float = 5.0  # global-norm clip of the weight gradient
    # the weight step's clip also counts the alphas' gradient of its loss (GDAS clips every parameter of the
    # network); the alphas are not moved by the weight step either way
    clip_with_alphas: bool = False
    # arch_first: the architecture step, then the weight step (DARTS and most); weight_first: the reverse (GDAS)
    order: str = "arch_first"
    arch_lr: float = 3e-4  # Adam learning rate of the alphas
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Adam betas of the alphas
    arch_weight_decay: float = 1e-3  # Adam weight decay of the alphas
    arch_warmup_epochs: int = 0
    # global-norm clip of the alpha gradient before the Adam step (null = none; 5 in P-DARTS)
    arch_grad_clip: Optional[float] = None
    eval_batch_size: int = 256
    # R-DARTS' signal: the dominant eigenvalue of the validation-loss Hessian w.r.t. the alphas after every
    # epoch, by power iteration (eigen_iters) over the first eigen_batches search-val batches
    track_eigenvalue: bool = False  # dominant Hessian eigenvalue w.r.t. the alphas after every epoch
    eigen_batches: int = 4  # search-val batches of the eigenvalue
    eigen_iters: int = 20  # power iterations of the eigenvalue
    compile: str = "off"  # off | compile (torch.compile) | graph (CUDA graphs); falls back to eager, logged
    sync_bn: bool = False  # under torchrun: BatchNorm statistics of the global batch, not each rank's slice

    def __post_init__(self) -> None:
        positive_int("search.epochs", self.epochs, hi=100_000)
        positive_int("search.batch_size", self.batch_size, hi=MAX_BATCH)
        positive_int("search.eval_batch_size", self.eval_batch_size, hi=MAX_BATCH)
        sgd("search", self)
        check(not self.nesterov or self.momentum > 0, "search.nesterov", self.nesterov,
              f"needs search.momentum above 0 (it is {self.momentum})")
        one_of("search.order", self.order, ("arch_first", "weight_first"))
        check(isinstance(self.clip_with_alphas, bool), "search.clip_with_alphas", self.clip_with_alphas, "true or false")
        positive("search.arch_lr", self.arch_lr)
        check(len(self.arch_betas) == 2 and all(0 <= b < 1 for b in self.arch_betas), "search.arch_betas",
              self.arch_betas, "two numbers in [0, 1)")
        non_negative("search.arch_weight_decay", self.arch_weight_decay)
        int_range("search.arch_warmup_epochs", self.arch_warmup_epochs, 0, 100_000)
        if self.arch_grad_clip is not None:
            positive("search.arch_grad_clip", self.arch_grad_clip)
        positive_int("search.eigen_batches", self.eigen_batches, hi=10_000)
        positive_int("search.eigen_iters", self.eigen_iters, hi=10_000)
        one_of("search.compile", self.compile, COMPILE_MODES)


@dataclass
class SupernetConf:
    """Size and options of the weight-sharing network used during search.

    ``partial_channels`` (K) and ``edge_norm`` are PC-DARTS' partial channel connections and edge
    normalisation; ``skip_dropout`` is P-DARTS' dropout on skip connections: the initial rate of
    each stage (one value for every stage, or one per stage), decayed over the stage's epochs.
    """

    C: int = 16  # channels of the first cells
    layers: int = 8  # cells (NB201: cells per stage)
    stem_multiplier: int = 3  # stem channels = stem_multiplier * C
    partial_channels: int = 1  # PC-DARTS' K: mixed ops see 1/K of the channels
    edge_norm: bool = False  # PC-DARTS' edge normalisation (betas)
    skip_dropout: list[float] = field(default_factory=lambda: [0.0])
    fused: bool = True  # mixed edges computed together (shared ReLU, grouped convs, one BN); false: op by op, same results
    # DARTS-: an auxiliary skip on every mixed edge, outside the softmax, weighted by beta decaying from aux_skip
    # (0 = off) over each stage's epochs (aux_skip_decay: linear, as released, or cosine); not part of the genotype
    aux_skip: float = 0.0
    aux_skip_decay: str = "linear"

    def __post_init__(self) -> None:
        positive_int("supernet.C", self.C, hi=MAX_CHANNELS)
        int_range("supernet.layers", self.layers, 1, MAX_CELLS)  # the space's skeleton may ask for more
        positive_int("supernet.stem_multiplier", self.stem_multiplier, hi=64)
        positive_int("supernet.partial_channels", self.partial_channels, hi=MAX_CHANNELS)
        check(self.C % self.partial_channels == 0, "supernet.partial_channels", self.partial_channels,
              f"must divide supernet.C ({self.C}); 1 turns partial channels off")
        check(1 <= len(self.skip_dropout) <= 16 and all(0 <= p < 1 for p in self.skip_dropout),
              "supernet.skip_dropout", self.skip_dropout, "a non-empty list of rates in [0, 1) (one, or one per stage)")
        finite("supernet.aux_skip", self.aux_skip)
        check(0 <= self.aux_skip <= 100, "supernet.aux_skip", self.aux_skip, "a coefficient from 0 (off) to 100")
        one_of("supernet.aux_skip_decay", self.aux_skip_decay, ("linear", "cosine"))


@dataclass
class RecipeConf:
    """How a genotype is retrained from scratch (DARTS 600-epoch CIFAR recipe by default).

    ``network``: ``cifar`` (DARTS' CIFAR stack, or NB201's skeleton for one-input cells) or ``imagenet``
    (two stems, AvgPool 7x7 head, 224x224 input). ``schedule`` of the lr per epoch e (of E = ``epochs``):
    ``cosine`` (to ``lr_min``), ``step`` (lr · ``lr_decay``^e, DARTS' ImageNet recipe) or ``linear_warmup``
    (P-DARTS/PC-DARTS: lr·(E−5−e)/(E−5) for e < E−5, then lr·(E−e)/((E−5)·5), and during the first
    ``warmup_epochs`` epochs that times (e+1)/``warmup_epochs``). ``label_smoothing`` applies to the
    training loss and the auxiliary head's loss, not to the test loss.
    """

    # not fields (no annotation): the allowed values, and P-DARTS/PC-DARTS' linear decay's gentler last epochs
    NETWORKS = ("cifar", "imagenet")  # nasrun.nets.NETWORKS
    SCHEDULES = ("cosine", "step", "linear_warmup")  # nasrun.train.retrain.lr_schedule
    LINEAR_DECAY_TAIL = 5

    name: str = "cifar"
    network: str = "cifar"  # cifar | imagenet: which evaluation network
    epochs: int = 600  # training epochs
    C: int = 36  # channels of the first cells
    layers: int = 20  # cells (NB201: cells per stage)
    batch_size: int = 96  # global batch (all torchrun processes together)
    lr: float = 0.025  # SGD learning rate
    lr_min: float = 0.0  # floor of the cosine schedule
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum (NB201's recipe)
    weight_decay: float = 3e-4  # SGD weight decay
    grad_clip: Optional[float] = 5.0  # null: no clipping
    auxiliary: bool = True  # auxiliary head after cell 2*layers//3
    auxiliary_weight: float = 0.4  # weight of its loss
    drop_path_prob: float = 0.2  # drop path, ramped linearly from 0
    cutout: int = 16  # cutout length (0 = off)
    eval_batch_size: int = 256  # batch of the test evaluation
    schedule: str = "cosine"  # cosine | step | linear_warmup
    lr_decay: float = 0.97  # step: the lr is multiplied by this after every epoch
    warmup_epochs: int = 0  # linear_warmup only
    label_smoothing: float = 0.0
    # take the search run's training settings (Amended-DARTS' unified hyperparameters)
    unify: bool = False
    # under torchrun: BatchNorm statistics of the whole global batch (SyncBatchNorm) instead of each rank's slice
    sync_bn: bool = False

    def __post_init__(self) -> None:
        positive_int("recipe.epochs", self.epochs, hi=100_000)
        positive_int("recipe.C", self.C, hi=MAX_CHANNELS)
        int_range("recipe.layers", self.layers, 1, MAX_CELLS)  # the genotype's skeleton may ask for more
        positive_int("recipe.batch_size", self.batch_size, hi=MAX_BATCH)
        positive_int("recipe.eval_batch_size", self.eval_batch_size, hi=MAX_BATCH)
        sgd("recipe", self)
        check(not self.nesterov or self.momentum > 0, "recipe.nesterov", self.nesterov, "false when recipe.momentum is 0")
        non_negative("recipe.auxiliary_weight", self.auxiliary_weight)
        check(0 <= self.drop_path_prob < 1, "recipe.drop_path_prob", self.drop_path_prob, "must be in [0, 1)")
        int_range("recipe.cutout", self.cutout, 0, 4096)  # 0 turns cutout off
        one_of("recipe.network", self.network, self.NETWORKS)
        one_of("recipe.schedule", self.schedule, self.SCHEDULES)
        check(isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1, "recipe.lr_decay", self.lr_decay,
              "must be in (0, 1] (the factor the lr is multiplied by after every epoch with recipe.schedule=step)")
        int_range("recipe.warmup_epochs", self.warmup_epochs, 0, 100_000)
        check(self.warmup_epochs == 0 or self.schedule == "linear_warmup", "recipe.warmup_epochs",
              self.warmup_epochs, f"0 with recipe.schedule={self.schedule} (warm-up belongs to linear_warmup)")
        if self.schedule == "linear_warmup":
            check(self.epochs > self.LINEAR_DECAY_TAIL, "recipe.epochs", self.epochs,
                  f"more than {self.LINEAR_DECAY_TAIL} with recipe.schedule=linear_warmup (its linear decay gives the "
                  f"last {self.LINEAR_DECAY_TAIL} epochs their own slope)")
        check(self.warmup_epochs < self.epochs, "recipe.warmup_epochs", self.warmup_epochs,
              f"must be less than recipe.epochs ({self.epochs})")
        check(isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1,
              "recipe.label_smoothing", self.label_smoothing, "must be in [0, 1) (0 turns it off)")
        check(isinstance(self.sync_bn, bool), "recipe.sync_bn", self.sync_bn, "true or false")


@dataclass
class NasrunConf:
    """The whole config of every command (search, retrain, show share one schema).

    ``estimator``, ``perturbation``, ``alpha_map``, ``schedule`` and ``selection`` hold one option of their axis
    (``nasrun.config.options``); a ``method`` preset picks them and names the combination.
    """

    seed: int = 2
    device: str = "auto"
    # torch's CPU threads (null: torch's default, one per core); recorded in result.json's environment
    threads: Optional[int] = None
    # fp32 | bf16 (autocast; BatchNorm, loss and second-order terms fp32) | fp64 (float64 everywhere; slow on
    # most GPUs, so a warning there, not a refusal); in result.json
    precision: str = "fp32"
    channels_last: bool = False  # weights and batches in the channels_last memory format; in result.json
    genotype: Optional[str] = None
    progress: bool = True
    # per-epoch scalars and images for TensorBoard in <run folder>/tensorboard (pip install 'nasrun[tensorboard]')
    logger: str = "none"
    space: SpaceConf = field(default_factory=SpaceConf)
    dataset: Optional[DatasetConf] = None
    method: MethodConf = field(default_factory=MethodConf)
    estimator: Any = field(default_factory=FirstOrderConf)
    perturbation: Any = field(default_factory=NoPerturbationConf)
    alpha_map: Any = field(default_factory=SoftmaxConf)
    schedule: Any = field(default_factory=SingleConf)
    selection: Any = field(default_factory=ArgmaxSelectionConf)
    benchmark: Any = field(default_factory=NoBenchmarkConf)
    search: SearchConf = field(default_factory=SearchConf)
    supernet: SupernetConf = field(default_factory=SupernetConf)
    recipe: RecipeConf = field(default_factory=RecipeConf)

    def __post_init__(self) -> None:
        int_range("seed", self.seed, 0, MAX_SEED)
        if self.threads is not None:
            int_range("threads", self.threads, 1, 1024)
        one_of("logger", self.logger, ("none", "tensorboard"))
        one_of("precision", self.precision, PRECISIONS)
        check(isinstance(self.channels_last, bool), "channels_last", self.channels_last, "true or false")
        ok = self.device in ("auto", "cpu", "cuda") or (
            self.device.startswith("cuda:") and self.device[5:].isdigit() and len(self.device) < 12
        )
        check(ok, "device", self.device, "one of auto, cpu, cuda, cuda:N")
        for group, options in STORED_GROUPS.items():
            value = getattr(self, group)
            check(type(value) in options.values(), group, value, "one of " + ", ".join(options))
        unfit = self.benchmark.space_refusal(self.space)
        check(unfit is None, "benchmark", self.benchmark.name, f"none for space={self.space.name}: {unfit}")
        net, sched = self.supernet, self.schedule
        check(len(net.skip_dropout) in (1, sched.stages), "supernet.skip_dropout", net.skip_dropout,
              f"one rate, or one per stage ({sched.stages} with schedule={sched.name})")
        check(not self.search.clip_with_alphas or self.perturbation.name == "none", "search.clip_with_alphas",
              self.search.clip_with_alphas, f"false with perturbation={self.perturbation.name} (its weight step trains "
              "under perturbed weights that carry no alpha gradient)")
        self._check_schedule_fits_space()
        self._check_rule_fits_space()

    def _check_rule_fits_space(self) -> None:
        """A released method's own genotype rule reads top-k cells, and does not mix with a skip cap."""
        from nasrun.spaces.space import Space

        rule = self.selection.rule
        if rule == "space":
            return
        space = Space(self.space)
        check(space.derivation == "top_k", "selection.rule", rule,
              f"space for space={space.name}: the {rule} rule reads cells whose nodes keep k inputs (top_k derivation), "
              f"and {space.name} derives by {space.derivation}")
        check(self.schedule.max_skips is None, "selection.rule", rule,
              f"space with schedule.max_skips={self.schedule.max_skips} (the skip cap re-derives by the space's rule)")

    def _check_schedule_fits_space(self) -> None:
        """What the schedule asks of the space: enough ops per edge to keep, skips to cap (exit 2 before any work)."""
        from nasrun.spaces.space import Space

        space, sched = Space(self.space), self.schedule
        check(self.supernet.layers >= space.min_layers, "supernet.layers", self.supernet.layers,
              f"at least {space.min_layers} for space={space.name} ({space.layers_meaning})")
        fewest = min(len(row) for kind in space.cell_types for row in space.edge_ops(kind))
        sched.check_fits(space, fewest)
        sched.check_supernet(self.supernet)
        if sched.max_skips is not None:
            check(space.derivation == "top_k" and space.sharing == "shared" and "skip_connect" in space.ops,
                  "schedule.max_skips", sched.max_skips,
                  f"null for space={space.name}: capping skip connections needs shared cells derived top-k "
                  "with skip_connect among the ops")



__all__ = ["NasrunConf", "DatasetConf", "SpaceConf", "MethodConf", "SearchConf", "SupernetConf", "RecipeConf",
           "one_line", "ConfigError", "MISSING", "owners_of", "shorten", "CONFIG_MODULE"]
