"""Typed schemas of every config group, and the validation that runs before any work starts.

Hydra checks types while composing; ranges and cross-field rules are checked here, in
``__post_init__``, which ``OmegaConf.to_object`` runs for every node. Every check raises
:class:`ConfigError` with the full key, the bad value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from nasrun.errors import ConfigError, NasrunError

DARTS_PRIMITIVES = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]
CIFAR10_MEAN = [0.49139968, 0.48215827, 0.44653124]
CIFAR10_STD = [0.24703233, 0.24348505, 0.26158768]

DATASETS = ("cifar10", "cifar100", "svhn", "imagenet", "fashion_mnist", "digits", "synthetic")
AUGMENTATIONS = ("crop", "flip")
ESTIMATORS = ("first_order", "second_order", "amended", "proximal", "mgs", "rs", "gld")
HVP_MODES = ("finite_difference", "exact")
PERTURBATIONS = ("none", "discrete", "random", "adversarial")
SIMPLEX_MODES = ("renorm", "project")
EPSILON_RAMPS = ("code", "to_max")
SCHEDULES = ("single", "progressive")
ALPHA_MAPS = ("softmax", "argmax")


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _positive_int(key: str, value: int) -> None:
    _check(isinstance(value, int) and value >= 1, key, value, "must be an integer >= 1")


def _non_negative(key: str, value: float) -> None:
    _check(math.isfinite(value) and value >= 0, key, value, "must be a finite number >= 0")


def _positive(key: str, value: float) -> None:
    _check(math.isfinite(value) and value > 0, key, value, "must be a finite number > 0")


def _check_sgd(group: str, c: Any) -> None:
    """The SGD settings that search and recipe share: lr, its cosine floor, momentum, decay, clipping."""
    _positive(f"{group}.lr", c.lr)
    _non_negative(f"{group}.lr_min", c.lr_min)
    _check(c.lr_min <= c.lr, f"{group}.lr_min", c.lr_min, f"must be <= {group}.lr ({c.lr})")
    _check(0 <= c.momentum < 1, f"{group}.momentum", c.momentum, "must be in [0, 1)")
    _non_negative(f"{group}.weight_decay", c.weight_decay)
    _positive(f"{group}.grad_clip", c.grad_clip)


@dataclass
class SpaceConf:
    """What can be searched: the op vocabulary (its order is the alpha column order)."""

    name: str = "darts"
    ops: list[str] = field(default_factory=lambda: list(DARTS_PRIMITIVES))

    def __post_init__(self) -> None:
        from nasrun.spaces.ops import OPS

        _check(len(self.ops) >= 1, "space.ops", self.ops, "needs at least one op")
        for op in self.ops:
            _check(op in OPS, "space.ops", op, "known ops are " + ", ".join(sorted(OPS)))
        _check(len(set(self.ops)) == len(self.ops), "space.ops", self.ops, "ops must be distinct")
        _check(any(op != "none" for op in self.ops), "space.ops", self.ops, "needs an op other than none")


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

    name: str = "cifar10"
    root: str = "data"
    download: bool = False
    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    mean: Optional[list[float]] = field(default_factory=lambda: list(CIFAR10_MEAN))
    std: Optional[list[float]] = field(default_factory=lambda: list(CIFAR10_STD))
    train_augment: list[str] = field(default_factory=lambda: ["crop", "flip"])
    crop_padding: int = 4
    augment_val: bool = False
    search_split: float = 0.5
    split_seed: int = 0
    test_fraction: float = 0.2
    num_train: int = 512
    num_test: int = 128
    subset: Any = None
    subset_classes: Optional[int] = None
    loader: str = "device"
    workers: int = 2
    pin_memory: bool = True

    def __post_init__(self) -> None:
        _check(self.name in DATASETS, "dataset.name", self.name, "one of " + ", ".join(DATASETS))
        files = self.name == "imagenet"  # decoded from image files on demand, not held in memory
        _positive_int("dataset.in_channels", self.in_channels)
        _positive_int("dataset.image_size", self.image_size)
        _check(self.num_classes >= 2, "dataset.num_classes", self.num_classes, "must be >= 2")
        for key in ("mean", "std"):
            value = getattr(self, key)
            _check(
                value is None or len(value) == self.in_channels,
                f"dataset.{key}",
                value,
                f"null (computed from the data) or one value per channel ({self.in_channels})",
            )
        if self.std is not None:
            _check(all(s > 0 for s in self.std), "dataset.std", self.std, "every value must be > 0")
        augmentations = ("resized_crop", "flip", "color_jitter") if files else AUGMENTATIONS
        for aug in self.train_augment:
            _check(aug in augmentations, "dataset.train_augment", aug,
                   f"one of {', '.join(augmentations)} for dataset {self.name}")
        _check(self.crop_padding >= 0, "dataset.crop_padding", self.crop_padding, "must be >= 0")
        _check(self.loader in ("device", "torch"), "dataset.loader", self.loader, "one of device, torch")
        _check(isinstance(self.workers, int) and self.workers >= 0, "dataset.workers", self.workers,
               "must be an integer >= 0 (0 loads in the main process)")
        if files:
            _check(self.loader == "torch", "dataset.loader", self.loader,
                   "torch for imagenet (its images are decoded from files by DataLoader workers)")
            _check(self.in_channels == 3, "dataset.in_channels", self.in_channels, "3 for imagenet (RGB)")
            _check(self.mean is not None and self.std is not None, "dataset.mean/std", [self.mean, self.std],
                   "given for imagenet (they cannot be computed from files on the fly)")
            _check(not self.download, "dataset.download", self.download,
                   "false for imagenet: it cannot be downloaded automatically (see the README's Datasets section)")
        amount = self.subset
        _check(
            amount is None
            or (isinstance(amount, int) and not isinstance(amount, bool) and amount >= 1)
            or (isinstance(amount, float) and 0 < amount <= 1),
            "dataset.subset",
            amount,
            "null, a fraction of each class in (0, 1] (e.g. 0.1) or a count per class >= 1 (e.g. 100)",
        )
        if self.subset_classes is not None:
            _check(2 <= self.subset_classes <= self.num_classes, "dataset.subset_classes", self.subset_classes,
                   f"null or an integer from 2 to dataset.num_classes ({self.num_classes})")
            self.num_classes = self.subset_classes  # the network gets one output per kept class
        _check(0 < self.search_split < 1, "dataset.search_split", self.search_split, "must be in (0, 1)")
        _check(0 < self.test_fraction < 1, "dataset.test_fraction", self.test_fraction, "must be in (0, 1)")
        _positive_int("dataset.num_train", self.num_train)
        _positive_int("dataset.num_test", self.num_test)


@dataclass
class MethodConf:
    """A search method: one choice per axis (estimator, ...) plus its hyperparameters."""

    name: str = "darts"
    estimator: str = "first_order"
    perturbation: str = "none"
    fd_radius: float = 0.01
    # Amended-DARTS: coefficient of the amending term, and how H v / B u are computed
    eta: float = 0.1
    hvp: str = "finite_difference"
    # where the second-order products are evaluated, and on which batch (the reference's choices)
    product_point: str = "current_weights"
    product_batch: str = "step_train_batch"
    # alphas: initial value of every entry (null: 1e-3 * N(0, 1) as in the DARTS code; 0.5 for NASP),
    # and how they become mixing weights (softmax, or NASP's one-hot argmax with raw alphas in [0, 1])
    alpha_init: Optional[float] = None
    alpha_map: str = "softmax"
    # NASP: coefficient of the parameter-size regulariser on the normal cell (0 = off, as released)
    param_reg: float = 0.0
    # ZARTS (estimator mgs | rs | gld): alpha moves every `update_every` weight steps; each of
    # `samples` candidates is scored after `inner_steps` SGD steps on a copy of the weights
    update_every: int = 10
    inner_steps: int = 10
    samples: int = 4
    inner_lr: float = 1e-3
    inner_momentum: float = 0.0
    inner_weight_decay: float = 3e-4
    inner_batch_size: int = 48
    inner_data: str = "val"
    # ZARTS-MGS: proposal scale (and its schedule), temperature, mixture weight, importance density
    sigma: float = 0.025
    sigma_schedule: str = "cosine"
    tau: float = 0.01
    mix_lambda: float = 1e-3
    density: str = "corrected"
    density_eps: float = 1e-4
    # ZARTS-RS (a reconstruction): step size and smoothing radius
    rs_lr: float = 1e-4
    rs_radius: float = 0.1
    # ZARTS-GLD (a reconstruction): largest radius; number of halvings (null: derived from the alpha shape)
    gld_radius: float = 0.13
    gld_levels: Optional[int] = None
    # SDARTS (perturbation random | adversarial): radius of the L-inf ball around softmax(alpha),
    # ramped linearly from epsilon_start; how a perturbed row returns to the simplex; PGD settings
    # (step size null: 2 * epsilon / pgd_steps, as released)
    epsilon: float = 0.3
    epsilon_start: float = 0.03
    epsilon_ramp: str = "code"
    simplex: str = "renorm"
    pgd_steps: int = 7
    pgd_step_size: Optional[float] = None
    pgd_random_start: bool = True
    # schedule: one stage, or P-DARTS' progressive stages. Stage i has supernet.layers +
    # stage_add_layers[i] cells and ends by keeping the stage_keep[i] strongest ops of every edge;
    # search.epochs and search.arch_warmup_epochs are per stage
    schedule: str = "single"
    stage_add_layers: list[int] = field(default_factory=lambda: [0, 6, 12])
    stage_keep: list[int] = field(default_factory=lambda: [5, 3, 1])
    # at most this many skip connections in the final normal cell (P-DARTS' refinement; null = no limit)
    max_skips: Optional[int] = None

    def __post_init__(self) -> None:
        _check(self.estimator in ESTIMATORS, "method.estimator", self.estimator, "one of " + ", ".join(ESTIMATORS))
        _check(self.perturbation in PERTURBATIONS, "method.perturbation", self.perturbation,
               "one of " + ", ".join(PERTURBATIONS))
        _positive("method.fd_radius", self.fd_radius)
        _non_negative("method.eta", self.eta)
        _check(self.hvp in HVP_MODES, "method.hvp", self.hvp, "one of " + ", ".join(HVP_MODES))
        _check(self.product_point == "current_weights", "method.product_point", self.product_point,
               "current_weights (the products are taken at the current weights, standing in for w*)")
        _check(self.product_batch == "step_train_batch", "method.product_batch", self.product_batch,
               "step_train_batch (the products use the iteration's training batch)")
        if self.alpha_init is not None:
            _check(math.isfinite(self.alpha_init), "method.alpha_init", self.alpha_init,
                   "null (1e-3 * N(0, 1)) or a finite number")
        _check(self.alpha_map in ALPHA_MAPS, "method.alpha_map", self.alpha_map, "one of " + ", ".join(ALPHA_MAPS))
        _non_negative("method.param_reg", self.param_reg)
        for key in ("update_every", "samples", "inner_batch_size"):
            _positive_int(f"method.{key}", getattr(self, key))
        _check(isinstance(self.inner_steps, int) and self.inner_steps >= 0, "method.inner_steps", self.inner_steps,
               "must be an integer >= 0 (0 scores candidates at the live weights)")
        _non_negative("method.inner_lr", self.inner_lr)
        _check(0 <= self.inner_momentum < 1, "method.inner_momentum", self.inner_momentum, "must be in [0, 1)")
        _non_negative("method.inner_weight_decay", self.inner_weight_decay)
        _check(self.inner_data in ("val", "train"), "method.inner_data", self.inner_data, "one of val, train")
        for key in ("sigma", "tau", "density_eps", "rs_lr", "rs_radius", "gld_radius"):
            _positive(f"method.{key}", getattr(self, key))
        _check(self.sigma_schedule in ("cosine", "constant"), "method.sigma_schedule", self.sigma_schedule,
               "one of cosine, constant")
        _check(0 <= self.mix_lambda <= 1, "method.mix_lambda", self.mix_lambda, "must be in [0, 1]")
        _check(self.density in ("corrected", "released"), "method.density", self.density, "one of corrected, released")
        _check(self.gld_levels is None or (isinstance(self.gld_levels, int) and self.gld_levels >= 0),
               "method.gld_levels", self.gld_levels, "null or an integer >= 0")
        _check(math.isfinite(self.epsilon) and 0 < self.epsilon <= 1, "method.epsilon", self.epsilon,
               "must be in (0, 1] (a radius around mixing weights in [0, 1])")
        _check(math.isfinite(self.epsilon_start) and 0 <= self.epsilon_start <= self.epsilon, "method.epsilon_start",
               self.epsilon_start, f"must be in [0, method.epsilon ({self.epsilon})]")
        _check(self.epsilon_ramp in EPSILON_RAMPS, "method.epsilon_ramp", self.epsilon_ramp,
               "one of " + ", ".join(EPSILON_RAMPS))
        _check(self.simplex in SIMPLEX_MODES, "method.simplex", self.simplex, "one of " + ", ".join(SIMPLEX_MODES))
        _positive_int("method.pgd_steps", self.pgd_steps)
        if self.pgd_step_size is not None:
            _positive("method.pgd_step_size", self.pgd_step_size)
        _check(self.schedule in SCHEDULES, "method.schedule", self.schedule, "one of " + ", ".join(SCHEDULES))
        _check(len(self.stage_add_layers) >= 1 and all(isinstance(a, int) and a >= 0 for a in self.stage_add_layers),
               "method.stage_add_layers", self.stage_add_layers, "a non-empty list of integers >= 0, one per stage")
        _check(len(self.stage_keep) == len(self.stage_add_layers), "method.stage_keep", self.stage_keep,
               f"one entry per stage ({len(self.stage_add_layers)}, the length of method.stage_add_layers)")
        _check(all(isinstance(k, int) and k >= 1 for k in self.stage_keep)
               and all(a >= b for a, b in zip(self.stage_keep, self.stage_keep[1:])),
               "method.stage_keep", self.stage_keep, "integers >= 1 that never increase from stage to stage")
        _check(self.max_skips is None or (isinstance(self.max_skips, int) and self.max_skips >= 0),
               "method.max_skips", self.max_skips, "null (no limit) or an integer >= 0")


@dataclass
class SearchConf:
    """The bilevel loop's settings (DARTS paper defaults)."""

    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    arch_warmup_epochs: int = 0
    # global-norm clip of the alpha gradient before the Adam step (null = none; 5 in P-DARTS)
    arch_grad_clip: Optional[float] = None
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        _positive_int("search.epochs", self.epochs)
        _positive_int("search.batch_size", self.batch_size)
        _positive_int("search.eval_batch_size", self.eval_batch_size)
        _check_sgd("search", self)
        _positive("search.arch_lr", self.arch_lr)
        _check(
            len(self.arch_betas) == 2 and all(0 <= b < 1 for b in self.arch_betas),
            "search.arch_betas",
            self.arch_betas,
            "two numbers in [0, 1)",
        )
        _non_negative("search.arch_weight_decay", self.arch_weight_decay)
        _check(
            isinstance(self.arch_warmup_epochs, int) and 0 <= self.arch_warmup_epochs,
            "search.arch_warmup_epochs",
            self.arch_warmup_epochs,
            "must be an integer >= 0",
        )
        if self.arch_grad_clip is not None:
            _positive("search.arch_grad_clip", self.arch_grad_clip)


@dataclass
class SupernetConf:
    """Size and options of the weight-sharing network used during search.

    ``partial_channels`` (K) and ``edge_norm`` are PC-DARTS' partial channel connections and edge
    normalisation; ``skip_dropout`` is P-DARTS' dropout on skip connections: the initial rate of
    each stage (one value for every stage, or one per stage), decayed over the stage's epochs.
    """

    C: int = 16
    layers: int = 8
    nodes: int = 4
    stem_multiplier: int = 3
    partial_channels: int = 1
    edge_norm: bool = False
    skip_dropout: list[float] = field(default_factory=lambda: [0.0])

    def __post_init__(self) -> None:
        _positive_int("supernet.C", self.C)
        _check(self.layers >= 3, "supernet.layers", self.layers, "must be >= 3 (two reduction cells and a normal cell)")
        _check(self.nodes >= 2, "supernet.nodes", self.nodes, "must be >= 2 (a genotype keeps two edges per node)")
        _positive_int("supernet.stem_multiplier", self.stem_multiplier)
        _positive_int("supernet.partial_channels", self.partial_channels)
        _check(self.C % self.partial_channels == 0, "supernet.partial_channels", self.partial_channels,
               f"must divide supernet.C ({self.C}); 1 turns partial channels off")
        _check(len(self.skip_dropout) >= 1 and all(math.isfinite(p) and 0 <= p < 1 for p in self.skip_dropout),
               "supernet.skip_dropout", self.skip_dropout, "a non-empty list of rates in [0, 1) (one, or one per stage)")


@dataclass
class RecipeConf:
    """How a genotype is retrained from scratch (DARTS 600-epoch CIFAR recipe by default)."""

    name: str = "cifar"
    epochs: int = 600
    C: int = 36
    layers: int = 20
    batch_size: int = 96
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2
    cutout: int = 16
    eval_batch_size: int = 256
    # take the search run's training settings (Amended-DARTS' unified hyperparameters)
    unify: bool = False

    def __post_init__(self) -> None:
        _positive_int("recipe.epochs", self.epochs)
        _positive_int("recipe.C", self.C)
        _check(self.layers >= 3, "recipe.layers", self.layers, "must be >= 3 (two reduction cells and a normal cell)")
        _positive_int("recipe.batch_size", self.batch_size)
        _positive_int("recipe.eval_batch_size", self.eval_batch_size)
        _check_sgd("recipe", self)
        _non_negative("recipe.auxiliary_weight", self.auxiliary_weight)
        _check(0 <= self.drop_path_prob < 1, "recipe.drop_path_prob", self.drop_path_prob, "must be in [0, 1)")
        _check(self.cutout >= 0, "recipe.cutout", self.cutout, "must be >= 0 (0 turns cutout off)")


@dataclass
class NasrunConf:
    """The whole config of every command (search, retrain, show share one schema)."""

    seed: int = 2
    device: str = "auto"
    genotype: Optional[str] = None
    progress: bool = True
    space: SpaceConf = field(default_factory=SpaceConf)
    dataset: Optional[DatasetConf] = None
    method: MethodConf = field(default_factory=MethodConf)
    search: SearchConf = field(default_factory=SearchConf)
    supernet: SupernetConf = field(default_factory=SupernetConf)
    recipe: RecipeConf = field(default_factory=RecipeConf)

    def __post_init__(self) -> None:
        _check(self.seed >= 0, "seed", self.seed, "must be an integer >= 0")
        ok = self.device in ("auto", "cpu", "cuda") or (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        )
        _check(ok, "device", self.device, "one of auto, cpu, cuda, cuda:N")
        m, net = self.method, self.supernet
        stages = len(m.stage_keep) if m.schedule == "progressive" else 1
        _check(len(net.skip_dropout) in (1, stages), "supernet.skip_dropout", net.skip_dropout,
               f"one rate, or one per stage ({stages} with method.schedule={m.schedule})")
        if m.schedule == "progressive":
            _check(m.stage_keep[0] <= len(self.space.ops), "method.stage_keep", m.stage_keep,
                   f"at most the number of ops in space.ops ({len(self.space.ops)}) in the first stage")
        if m.max_skips is not None:
            _check(any(op not in ("none", "skip_connect") for op in self.space.ops), "method.max_skips", m.max_skips,
                   "null for a space whose only ops are none and skip_connect")


def register_schemas() -> None:
    """Put the schema into Hydra's ConfigStore so the primary configs can extend it."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="nasrun_schema", node=NasrunConf)


def to_typed(cfg: DictConfig) -> NasrunConf:
    """Turn a composed config into dataclasses, running every check; raise ConfigError on any problem."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " (a published name such as DARTS_V2, a genotype.json or a search run folder)" if "genotype" in missing else ""
        raise ConfigError(f"{', '.join(missing)} must be given, e.g. {missing[0]}=...{hint}")
    try:
        typed = OmegaConf.to_object(cfg)
    except NasrunError:
        raise
    except Exception as exc:  # omegaconf wraps errors raised inside __post_init__
        cause = exc.__cause__ or exc.__context__
        while cause is not None:
            if isinstance(cause, NasrunError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise ConfigError(one_line(exc)) from None
    assert isinstance(typed, NasrunConf)
    return typed


def one_line(exc: BaseException) -> str:
    """Condense a Hydra/OmegaConf error (often several lines) into one readable line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keep = []
    for ln in lines:
        if ln.startswith(("full_key:", "object_type=", "reference_type=", "Set the environment variable")):
            continue
        keep.append(ln)
    text = "; ".join(keep) if keep else type(exc).__name__
    return text.replace("Available options in", "available options in").replace(":;", ":")


def as_plain_dict(cfg: NasrunConf | DictConfig) -> dict:
    """A JSON-friendly dict of a config (for result.json and config comparison)."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
