"""The options of every method axis: one dataclass per option, one registry per axis.

A method is a choice on five independent axes: the architecture-gradient
**estimator**, the **perturbation** of the mixing weights in the weight step, the **alpha map**
that turns alphas into mixing weights (with its regulariser), the **schedule** of stages and the
**selection** that reads the genotype off the trained supernet.
Each axis is a Hydra config group whose options are the dataclasses below, registered in
:data:`AXES`, the single source of the allowed names. An option holds only its own keys, so a key
of another option (``estimator.eta`` under ``estimator=first_order``) is refused when composing.
``__post_init__`` checks ranges; it runs when the composed config is turned into objects.

Each option also says what it can do (its *capabilities*: runs under torchrun, takes a double
backward, trains single paths, changes the number of cells, ...), as class attributes or small
methods on the option itself. The loops and the checks ask the option, so adding an option never
means adding its name to a list elsewhere. Every axis has a base class that lists its capabilities
and gives each the refusing value: an option that forgets to declare one is refused, not allowed.

This module is long because every option of the five axes and of the benchmarks, with its capabilities, sits
in this one torch-free module, which the pre-work checks, the help and the composition errors read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, NamedTuple, Optional

from nasrun.config.checks import (
    check,
    finite,
    int_range,
    non_negative,
    one_of,
    positive,
    positive_int,
    unit_interval,
)

HVP_MODES = ("finite_difference", "exact")
SIMPLEX_MODES = ("renorm", "project")
EPSILON_RAMPS = ("code", "to_max")


class AxisOption:
    """What every option of an axis answers (the capabilities; each option declares all of them on itself).

    The values here are the refusing ones, so an option that forgets a capability is refused, never
    silently allowed; ``tests/test_rooms.py`` checks that every option declares every capability of its axis.
    """

    #: The config group of the axis.
    axis: ClassVar[str] = ""
    #: The capabilities every option of this axis declares (class attributes or methods).
    capabilities: ClassVar[tuple[str, ...]] = ("runs_under_torchrun",)
    #: A search under torchrun supports it (DDP weight step, estimator gradients all-reduced, rank 0's draws).
    runs_under_torchrun: ClassVar[bool] = False


def options_with(axis: str, capability: str, value: Any = True) -> list[str]:
    """The names of ``axis``'s options whose ``capability`` class attribute is ``value`` (for "one of ..." lines)."""
    return [name for name, schema in AXES[axis].items() if getattr(schema, capability) == value]


def _own_name(group: str, option: object) -> None:
    """``name`` says which option this is; changing it by hand would mislabel the run."""
    expected = type(option).__dataclass_fields__["name"].default  # type: ignore[attr-defined]
    check(option.name == expected, f"{group}.name", option.name,  # type: ignore[attr-defined]
          f"{expected!r} (choose another option with {group}=NAME instead)")


# ------------------------------------------------------------------------------- estimators
class DoubleBackward(NamedTuple):
    """The setting that makes an estimator take a double backward through the supernet, and the one that avoids it."""

    setting: str  # e.g. estimator.hvp=exact
    instead: str  # e.g. estimator.hvp=finite_difference


class EstimatorOption(AxisOption):
    """An architecture-gradient estimator (``estimator=NAME``)."""

    axis = "estimator"
    capabilities = ("runs_under_torchrun", "double_backward")

    def double_backward(self) -> Optional[DoubleBackward]:
        """Why this estimator, as set, takes a double backward through the supernet (which compiled graphs and the
        ranks' global BatchNorm cannot pass), or None when it takes none. Base: assumed, so it is refused."""
        return DoubleBackward(f"estimator={self.name}", "an estimator that declares it takes none")  # type: ignore[attr-defined]


def _exact_products(hvp: str) -> Optional[DoubleBackward]:
    """The products of ``hvp=exact`` are double backwards; the finite differences are not."""
    return DoubleBackward("estimator.hvp=exact", "estimator.hvp=finite_difference") if hvp == "exact" else None


@dataclass
class FirstOrderConf(EstimatorOption):
    """DARTS first order: the gradient of the validation loss at the current weights."""

    name: str = "first_order"
    runs_under_torchrun = True

    def double_backward(self) -> Optional[DoubleBackward]:
        return None

    def __post_init__(self) -> None:
        _own_name("estimator", self)


@dataclass
class SecondOrderConf(EstimatorOption):
    """DARTS second order: one unrolled SGD step; B v' at the current weights, by a central difference of
    radius ``fd_radius`` (``hvp=finite_difference``, as the reference code) or by double backward (``exact``)."""

    name: str = "second_order"
    hvp: str = "finite_difference"
    fd_radius: float = 0.01  # r in epsilon = r / ||v'|| of the finite difference
    runs_under_torchrun = True  # the finite differences' and the products' gradients are all-reduced

    def double_backward(self) -> Optional[DoubleBackward]:
        return _exact_products(self.hvp)

    def __post_init__(self) -> None:
        _own_name("estimator", self)
        one_of("estimator.hvp", self.hvp, HVP_MODES)
        positive("estimator.fd_radius", self.fd_radius)


@dataclass
class AmendedConf(EstimatorOption):
    """Amended-DARTS: g1 - eta * B (H v) at the current weights on the step's training batch."""

    name: str = "amended"
    eta: float = 0.1  # weight of the amending term (0 = first-order DARTS)
    hvp: str = "finite_difference"  # finite_difference (as the reference) | exact (double backward)
    fd_radius: float = 0.01  # r in epsilon = r / ||direction|| of both products
    runs_under_torchrun = True

    def double_backward(self) -> Optional[DoubleBackward]:
        return _exact_products(self.hvp) if self.eta != 0 else None  # eta = 0 takes no products

    def __post_init__(self) -> None:
        _own_name("estimator", self)
        non_negative("estimator.eta", self.eta)
        one_of("estimator.hvp", self.hvp, HVP_MODES)
        positive("estimator.fd_radius", self.fd_radius)


@dataclass
class ProximalConf(EstimatorOption):
    """NASP: the gradient at the discrete architecture, applied to the alphas, then the box [0, 1]."""

    name: str = "proximal"
    runs_under_torchrun = False

    def double_backward(self) -> Optional[DoubleBackward]:
        return None

    def __post_init__(self) -> None:
        _own_name("estimator", self)


@dataclass
class ZeroOrderConf(EstimatorOption):
    """What the ZARTS rules share: alpha moves every ``update_every`` weight steps; each of ``samples``
    candidates is scored after ``inner_steps`` SGD steps on a copy of the weights.

    The rules share their capabilities too (declared here for all three): no double backward (only losses
    are compared), and not under torchrun (the candidates' fine-tuning runs on one process's weight copy).
    """

    update_every: int = 10  # alpha moves once every this many weight steps
    inner_steps: int = 10  # SGD steps on a copy of the weights per candidate (0: score at the live weights)
    samples: int = 4  # candidate alphas per update
    inner_lr: float = 1e-3  # SGD lr of the fine-tuning
    inner_momentum: float = 0.0  # SGD momentum of the fine-tuning
    inner_weight_decay: float = 3e-4  # SGD weight decay of the fine-tuning
    inner_batch_size: int = 48  # images per fine-tuning step
    inner_data: str = "val"  # val | train: the half the fine-tuning batches come from
    runs_under_torchrun = False

    def double_backward(self) -> Optional[DoubleBackward]:
        return None

    def _check_common(self) -> None:
        _own_name("estimator", self)
        for key in ("update_every", "samples", "inner_batch_size"):
            positive_int(f"estimator.{key}", getattr(self, key))
        int_range("estimator.inner_steps", self.inner_steps, 0, 10**6)
        non_negative("estimator.inner_lr", self.inner_lr)
        unit_interval("estimator.inner_momentum", self.inner_momentum)
        non_negative("estimator.inner_weight_decay", self.inner_weight_decay)
        one_of("estimator.inner_data", self.inner_data, ("val", "train"))


@dataclass
class MGSConf(ZeroOrderConf):
    """ZARTS-MGS: proposal scale (and its schedule), temperature, mixture weight, importance density."""

    name: str = "mgs"
    sigma: float = 0.025  # proposal scale
    sigma_schedule: str = "cosine"  # cosine | constant
    tau: float = 0.01  # temperature of the importance weights
    mix_lambda: float = 1e-3  # weight of the zero-centred proposal
    density: str = "corrected"  # corrected | released (the script's slip)
    density_eps: float = 1e-4  # stabiliser of 1 / q

    def __post_init__(self) -> None:
        self._check_common()
        for key in ("sigma", "tau", "density_eps"):
            positive(f"estimator.{key}", getattr(self, key))
        one_of("estimator.sigma_schedule", self.sigma_schedule, ("cosine", "constant"))
        unit_interval("estimator.mix_lambda", self.mix_lambda, closed_right=True)
        one_of("estimator.density", self.density, ("corrected", "released"))


@dataclass
class RSConf(ZeroOrderConf):
    """ZARTS-RS (a reconstruction): step size and smoothing radius."""

    name: str = "rs"
    rs_lr: float = 1e-4  # step size
    rs_radius: float = 0.1  # smoothing radius of the finite differences

    def __post_init__(self) -> None:
        self._check_common()
        positive("estimator.rs_lr", self.rs_lr)
        positive("estimator.rs_radius", self.rs_radius)


@dataclass
class GLDConf(ZeroOrderConf):
    """ZARTS-GLD (a reconstruction): the largest radius and the number of halvings (null: from the alpha shape)."""

    name: str = "gld"
    gld_radius: float = 0.13  # largest radius
    gld_levels: Optional[int] = None  # halvings (null: from the alpha shape)

    def __post_init__(self) -> None:
        self._check_common()
        positive("estimator.gld_radius", self.gld_radius)
        if self.gld_levels is not None:
            int_range("estimator.gld_levels", self.gld_levels, 0, 64)


# ---------------------------------------------------------------------------- perturbations
class PerturbationOption(AxisOption):
    """A perturbation of the mixing weights in the weight step (``perturbation=NAME``)."""

    axis = "perturbation"
    capabilities = ("runs_under_torchrun", "single_path")
    #: The weight step trains one op per edge, so the ops that did not run keep no gradient (a fused supernet
    #: then keeps every op's parameters apart instead of stacking them; True is always correct, only slower).
    single_path: ClassVar[bool] = True


@dataclass
class NoPerturbationConf(PerturbationOption):
    """The weight step trains under the clean mixing weights."""

    name: str = "none"
    runs_under_torchrun = True
    single_path = False

    def __post_init__(self) -> None:
        _own_name("perturbation", self)


@dataclass
class DiscreteConf(PerturbationOption):
    """NASP: the weight step trains the single path of the projected one-hot architecture."""

    name: str = "discrete"
    runs_under_torchrun = False
    single_path = True

    def __post_init__(self) -> None:
        _own_name("perturbation", self)


@dataclass
class RandomConf(PerturbationOption):
    """SDARTS-RS: A + U(-eps, eps) with eps ramped from ``epsilon_start`` to ``epsilon``, put back on the simplex."""

    name: str = "random"
    epsilon: float = 0.3  # radius of the L-inf ball around the mixing weights
    epsilon_start: float = 0.03  # radius in the first epoch (linear ramp)
    epsilon_ramp: str = "code"  # code (as released) | to_max
    simplex: str = "renorm"  # renorm (as released) | project
    runs_under_torchrun = True  # rank 0 draws it and every rank trains under it
    single_path = False

    def __post_init__(self) -> None:
        _own_name("perturbation", self)
        finite("perturbation.epsilon", self.epsilon)
        check(0 < self.epsilon <= 1, "perturbation.epsilon", self.epsilon,
              "must be in (0, 1] (a radius around mixing weights in [0, 1])")
        finite("perturbation.epsilon_start", self.epsilon_start)
        check(0 <= self.epsilon_start <= self.epsilon, "perturbation.epsilon_start", self.epsilon_start,
              f"must be in [0, perturbation.epsilon ({self.epsilon})]")
        one_of("perturbation.epsilon_ramp", self.epsilon_ramp, EPSILON_RAMPS)
        one_of("perturbation.simplex", self.simplex, SIMPLEX_MODES)


@dataclass
class AdversarialConf(RandomConf):
    """SDARTS-ADV: PGD on the mixing weights (step size null: 2 * epsilon / pgd_steps, as released)."""

    name: str = "adversarial"
    pgd_steps: int = 7  # PGD steps
    pgd_step_size: Optional[float] = None  # null: 2 * epsilon / pgd_steps
    pgd_random_start: bool = True  # start PGD from a random point in the ball
    runs_under_torchrun = False  # declared here, not inherited from RandomConf: the attack is one process's
    single_path = False

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int("perturbation.pgd_steps", self.pgd_steps, hi=1000)
        if self.pgd_step_size is not None:
            positive("perturbation.pgd_step_size", self.pgd_step_size)


# ------------------------------------------------------------------------------- alpha maps
def _check_init(group: str, value: Optional[float]) -> None:
    if value is not None:
        finite(f"{group}.init", value)


class AlphaMapOption(AxisOption):
    """How the alphas become mixing weights, with its regulariser (``alpha_map=NAME``)."""

    axis = "alpha_map"
    capabilities = ("runs_under_torchrun", "single_path")
    #: The mixing weights select one op per edge, so the ops that did not run keep no gradient (a fused supernet
    #: then keeps every op's parameters apart instead of stacking them; True is always correct, only slower).
    single_path: ClassVar[bool] = True


@dataclass
class SoftmaxConf(AlphaMapOption):
    """Mixing weights = softmax(alpha) per edge; ``init`` fills every alpha (null: 1e-3 * N(0, 1), as DARTS)."""

    name: str = "softmax"
    init: Optional[float] = None  # fill every alpha with this (null: 1e-3 * N(0, 1))
    # beta-DARTS: lambda * mean_e logsumexp(alpha_e) on the architecture step, lambda = beta_decay * epoch /
    # beta_decay_epochs (released: 50 and 100, the 100 fixed whatever search.epochs is); 0 = off
    beta_decay: float = 0.0
    beta_decay_epochs: int = 100
    runs_under_torchrun = True
    single_path = False

    def __post_init__(self) -> None:
        _own_name("alpha_map", self)
        _check_init("alpha_map", self.init)
        non_negative("alpha_map.beta_decay", self.beta_decay)
        positive_int("alpha_map.beta_decay_epochs", self.beta_decay_epochs, hi=100_000)


@dataclass
class ArgmaxConf(AlphaMapOption):
    """NASP: one-hot on the largest alpha other than ``none`` (straight-through); raw alphas in [0, 1].

    ``param_reg`` weighs NASP's parameter-size regulariser on the normal cell (0 = off, as released).
    """

    name: str = "argmax"
    init: Optional[float] = 0.5  # fill every alpha with this (NASP: 0.5)
    param_reg: float = 0.0  # NASP's parameter-size regulariser (0 = off)
    runs_under_torchrun = False
    single_path = True  # one op per edge (straight-through)

    def __post_init__(self) -> None:
        _own_name("alpha_map", self)
        _check_init("alpha_map", self.init)
        non_negative("alpha_map.param_reg", self.param_reg)


SAMPLE_SCHEDULES = ("forward", "step")


def _check_sample(option: Any) -> None:
    _own_name("alpha_map", option)
    _check_init("alpha_map", option.init)
    one_of("alpha_map.sample", option.sample, SAMPLE_SCHEDULES)


def _check_temperatures(key: str, top: float, tau_min: float) -> None:
    """A temperature schedule from ``top`` (the option's ``key``) down to ``tau_min`` > 0."""
    positive("alpha_map.tau_min", tau_min)
    check(tau_min <= top <= 1000, f"alpha_map.{key}", top, f"a temperature from alpha_map.tau_min ({tau_min}) to 1000")


@dataclass
class DirichletConf(AlphaMapOption):
    """DrNAS: mixing weights ~ Dirichlet(ELU(alpha) + 1), a pathwise sample; the genotype reads softmax(alpha).

    ``sample``: forward (a fresh sample in every forward, as released) or step (one per search step).
    ``kl``: DrNAS' KL term to Dirichlet(1) on the architecture step (0 = off: the released default, l2, is
    the alphas' Adam weight decay).
    """

    name: str = "dirichlet"
    init: Optional[float] = None
    sample: str = "forward"
    kl: float = 0.0
    runs_under_torchrun = False
    single_path = False

    def __post_init__(self) -> None:
        _check_sample(self)
        non_negative("alpha_map.kl", self.kl)


@dataclass
class GumbelConf(AlphaMapOption):
    """SNAS: mixing weights = softmax((alpha + Gumbel noise) / tau); tau from tau_start down to tau_min."""

    name: str = "gumbel"
    init: Optional[float] = None
    sample: str = "forward"
    tau_start: float = 1.0
    tau_min: float = 0.03
    runs_under_torchrun = False
    single_path = False

    def __post_init__(self) -> None:
        _check_sample(self)
        _check_temperatures("tau_start", self.tau_start, self.tau_min)


@dataclass
class GumbelHardConf(AlphaMapOption):
    """GDAS: one op per edge (hard Gumbel-max, straight-through); tau from tau_max to exactly tau_min."""

    name: str = "gumbel_hard"
    init: Optional[float] = None
    sample: str = "forward"
    tau_max: float = 10.0
    tau_min: float = 0.1
    runs_under_torchrun = False
    single_path = True  # only the sampled op of each edge runs

    def __post_init__(self) -> None:
        _check_sample(self)
        _check_temperatures("tau_max", self.tau_max, self.tau_min)


@dataclass
class SigmoidConf(AlphaMapOption):
    """FairDARTS: mixing weights = sigmoid(alpha), one gate per op; ``zero_one`` weighs its zero-one loss."""

    name: str = "sigmoid"
    init: Optional[float] = 0.0  # FairDARTS starts every gate at sigmoid(0) = 0.5
    zero_one: float = 10.0  # released w_aux; 0 = off
    zero_one_form: str = "mse"  # mse: mean (sigma - 0.5)^2 (released default) | l1: mean |sigma - 0.5|
    runs_under_torchrun = False
    single_path = False

    def __post_init__(self) -> None:
        _own_name("alpha_map", self)
        _check_init("alpha_map", self.init)
        non_negative("alpha_map.zero_one", self.zero_one)
        one_of("alpha_map.zero_one_form", self.zero_one_form, ("mse", "l1"))


# -------------------------------------------------------------------------------- schedules
def _check_max_skips(value: Optional[int]) -> None:
    if value is not None:
        int_range("schedule.max_skips", value, 0, 1000)


class ScheduleOption(AxisOption):
    """The stages of a search (``schedule=NAME``)."""

    axis = "schedule"
    capabilities = ("runs_under_torchrun", "changes_cell_count")
    #: Stages change the number of cells, so the space's cells must be shared (a per-position space has one
    #: cell per position, fixed by its layer count).
    changes_cell_count: ClassVar[bool] = True

    def check_supernet(self, supernet: Any) -> None:
        """What the schedule asks of the ``supernet`` config (a ConfigError line naming the key); base: nothing."""

    def check_fits(self, space: Any, fewest_ops: int) -> None:
        """What the schedule asks of ``space`` (a :class:`nasrun.spaces.space.Space` whose sparsest edge has
        ``fewest_ops`` ops): a ConfigError line naming the key before any work."""
        if self.changes_cell_count:
            fixed = ", ".join(options_with("schedule", "changes_cell_count", False))
            check(space.sharing == "shared", "schedule", self.name,  # type: ignore[attr-defined]
                  f"{fixed} for space={space.name}: its cells are per position, "
                  "and stages change the number of cells")


@dataclass
class SingleConf(ScheduleOption):
    """One stage of search.epochs epochs. ``max_skips`` caps the final normal cell's skip connections."""

    name: str = "single"
    max_skips: Optional[int] = None  # at most this many skips in the final normal cell (null = no limit)
    runs_under_torchrun = True
    changes_cell_count = False

    def __post_init__(self) -> None:
        _own_name("schedule", self)
        _check_max_skips(self.max_skips)

    @property
    def stages(self) -> int:
        return 1


@dataclass
class ProgressiveConf(ScheduleOption):
    """P-DARTS: stage i has supernet.layers + stage_add_layers[i] cells and ends keeping the
    stage_keep[i] strongest ops of every edge; search.epochs and arch_warmup_epochs are per stage."""

    name: str = "progressive"
    # cells added to supernet.layers in each stage
    stage_add_layers: list[int] = field(default_factory=lambda: [0, 6, 12])
    stage_keep: list[int] = field(default_factory=lambda: [5, 3, 1])  # ops each edge keeps at the end of each stage
    max_skips: Optional[int] = None  # at most this many skips in the final normal cell (null = no limit)
    runs_under_torchrun = True  # each stage's new supernet starts from rank 0's initialisation
    changes_cell_count = True

    def check_fits(self, space: Any, fewest_ops: int) -> None:
        """Shared cells, and no more ops kept after the first stage than the sparsest edge has."""
        super().check_fits(space, fewest_ops)
        check(self.stage_keep[0] <= fewest_ops, "schedule.stage_keep", self.stage_keep,
              f"at most {fewest_ops} ops per edge in the first stage: space={space.name} has {fewest_ops} on some edge")

    def __post_init__(self) -> None:
        _own_name("schedule", self)
        _check_max_skips(self.max_skips)
        adds, keep = self.stage_add_layers, self.stage_keep
        check(1 <= len(adds) <= 16 and all(0 <= a <= 1000 for a in adds), "schedule.stage_add_layers", adds,
              "a list of 1 to 16 integers from 0 to 1000, one per stage")
        check(len(keep) == len(adds), "schedule.stage_keep", keep,
              f"one entry per stage ({len(adds)}, the length of schedule.stage_add_layers)")
        check(all(1 <= k <= 1000 for k in keep) and all(a >= b for a, b in zip(keep, keep[1:])),
              "schedule.stage_keep", keep, "integers >= 1 that never increase from stage to stage")

    @property
    def stages(self) -> int:
        return len(self.stage_keep)


#: The ops whose weights the widening schedule knows how to widen (DrNAS' ``wider`` of each op).
WIDENABLE_OPS = ("none", "skip_connect", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7", "avg_pool_3x3",
                 "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5", "conv_7x1_1x7",
                 "conv_3x1_1x3", "conv_1x1", "conv_3x3", "nor_conv_1x1", "nor_conv_3x3")


@dataclass
class WideningConf(ScheduleOption):
    """DrNAS' progressive learning: the same supernet through stages of search.epochs epochs each, with partial
    channels 1/stage_partial_channels[i] and stage_ops[i] ops per edge. Between stages every edge keeps its
    strongest alphas, the ops' weights (and their momentum) are widened to the new channel count by copying
    randomly chosen channels (net2wider), and the alphas' Adam and the learning-rate cosine (over all the
    stages) go on. arch_warmup_epochs counts within each stage, as released."""

    name: str = "widening"
    stage_partial_channels: list[int] = field(default_factory=lambda: [6, 4])  # K of each stage: ops see C/K
    # ops each edge has in each stage, at most (null: all): the strongest alphas when the stage starts
    stage_ops: list[Optional[int]] = field(default_factory=lambda: [None, 4])
    max_skips: Optional[int] = None  # at most this many skips in the final normal cell (null = no limit)
    runs_under_torchrun = False
    changes_cell_count = False

    def check_supernet(self, supernet: Any) -> None:
        """C a multiple of every stage's K; partial channels set per stage here, and no auxiliary skip to widen."""
        check(all(supernet.C % k == 0 for k in self.stage_partial_channels), "supernet.C", supernet.C,
              f"a multiple of every schedule.stage_partial_channels ({self.stage_partial_channels}): ops see C/K")
        check(supernet.partial_channels == 1, "supernet.partial_channels", supernet.partial_channels,
              "1 with schedule=widening (set the channels of each stage with schedule.stage_partial_channels)")
        check(supernet.aux_skip == 0, "supernet.aux_skip", supernet.aux_skip,
              "0 with schedule=widening (it widens the ops of an edge, not an auxiliary skip)")

    def check_fits(self, space: Any, fewest_ops: int) -> None:
        """Ops it can widen (an edge with fewer ops than a stage keeps keeps them all)."""
        super().check_fits(space, fewest_ops)
        unknown = [op for op in space.ops if op not in WIDENABLE_OPS]
        check(not unknown, "schedule", self.name, f"a schedule other than widening for space={space.name}: it cannot "
              f"widen {', '.join(unknown)} (it widens {', '.join(WIDENABLE_OPS)})")

    def __post_init__(self) -> None:
        _own_name("schedule", self)
        _check_max_skips(self.max_skips)
        ks, ops = self.stage_partial_channels, self.stage_ops
        check(1 <= len(ks) <= 16 and all(isinstance(k, int) and 1 <= k <= 64 for k in ks),
              "schedule.stage_partial_channels", ks, "a list of 1 to 16 integers from 1 to 64, one per stage")
        check(all(a >= b for a, b in zip(ks, ks[1:])), "schedule.stage_partial_channels", ks,
              "values that never increase (each stage's ops see at least the channels of the last)")
        check(len(ops) == len(ks), "schedule.stage_ops", ops,
              f"one entry per stage ({len(ks)}, the length of schedule.stage_partial_channels)")
        check(all(k is None or (isinstance(k, int) and 1 <= k <= 1000) for k in ops) and None not in ops[1:],
              "schedule.stage_ops", ops, "null (every op) for the first stage or integers >= 1; integers after it")
        sizes = [k for k in ops if k is not None]
        check(all(a >= b for a, b in zip(sizes, sizes[1:])), "schedule.stage_ops", ops,
              "integers that never increase from stage to stage")

    @property
    def stages(self) -> int:
        return len(self.stage_partial_channels)


# ------------------------------------------------------------------------------- selections
SELECTION_CRITERIA = ("acc", "loss")


class SelectionOption(AxisOption):
    """How the genotype is read off the trained supernet (``selection=NAME``)."""

    axis = "selection"
    capabilities = ("runs_under_torchrun", "tunes")
    #: The selection trains the supernet further between its decisions (epochs after the search's own).
    tunes: ClassVar[bool] = True


#: How the final genotype is read off the weights (``selection.rule``): the space's rule, GDAS' strongest
#: (op, input) pairs, FairDARTS' threshold (``nasrun.spaces.rules``).
SELECTION_RULES = ("space", "pairs", "threshold")


def _check_rule(conf: Any) -> None:
    one_of("selection.rule", conf.rule, SELECTION_RULES)
    check(isinstance(conf.threshold, (int, float)) and not isinstance(conf.threshold, bool)
          and 0 < conf.threshold <= 1, "selection.threshold", conf.threshold, "must be a number in (0, 1]")


@dataclass
class ArgmaxSelectionConf(SelectionOption):
    """The genotype read off the weights at the end of the search: by the space's derivation rule (DARTS' argmax
    and top-k) on the alpha map's ranking, or by a released method's own rule (``rule``)."""

    name: str = "argmax"
    # space: the space's derivation | pairs: GDAS' k strongest (op, input) pairs per node, which may share an
    # input | threshold: FairDARTS' k strongest inputs per node, each kept only if its best op's weight reaches
    # selection.threshold (a node may keep none). pairs and threshold read top-k spaces (DARTS-stacked) only.
    rule: str = "space"
    threshold: float = 0.85  # the threshold rule's weight floor (xiaomi-automl/FairDARTS: op_threshold 0.85)
    runs_under_torchrun = True
    tunes = False

    def __post_init__(self) -> None:
        _own_name("selection", self)
        _check_rule(self)


@dataclass
class PerturbationSelectionConf(SelectionOption):
    """DARTS-PT: decide edge by edge which op's removal hurts the supernet most, tuning it between decisions.

    After the search, one undecided edge per cell type (drawn at random) is scored with each of its ops
    removed from the mixing weights in turn, on the search-val split; the op whose removal gives the lowest
    accuracy (``crit=acc``) or the highest loss (``crit=loss``) is kept and the edge becomes one-hot. In spaces
    that keep a few inputs per node, the nodes are then decided the same way, dropping the edge whose removal
    hurts least until the node keeps its quota. ``interval`` epochs of training under the projected weights
    separate decisions; the weights' SGD restarts at ``search.lr / lr_divisor``.
    """

    name: str = "perturbation"
    interval: int = 5  # tuning epochs between decisions (ruocwang/darts-pt: --proj_intv 5)
    crit: str = "acc"  # acc | loss
    lr_divisor: float = 10.0  # the tuning SGD's learning rate is search.lr / lr_divisor (released: 10)
    eval_images: Optional[int] = None  # score on the first N search-val images (null: all of them, as released)
    # constant: the tuning SGD keeps search.lr / lr_divisor (as released: its DARTS-space cosine is built but never
    # stepped) | cosine: annealed to search.lr_min over the tuning epochs
    lr_schedule: str = "constant"
    rule: str = "space"  # the projected weights are read by the space's rule (as released); no other
    runs_under_torchrun = False
    tunes = True

    def __post_init__(self) -> None:
        _own_name("selection", self)
        check(self.rule == "space", "selection.rule", self.rule, "space with selection=perturbation (its genotype is "
              "the space's rule on the projected weights)")
        positive_int("selection.interval", self.interval, hi=1000)
        one_of("selection.crit", self.crit, SELECTION_CRITERIA)
        positive("selection.lr_divisor", self.lr_divisor)
        if self.eval_images is not None:
            positive_int("selection.eval_images", self.eval_images, hi=10**9)
        one_of("selection.lr_schedule", self.lr_schedule, ("constant", "cosine"))


#: Axis -> option name -> schema. The Hydra groups, the CLI's help and the error messages read this.
AXES: dict[str, dict[str, type]] = {
    "estimator": {"first_order": FirstOrderConf, "second_order": SecondOrderConf, "amended": AmendedConf,
                  "proximal": ProximalConf, "mgs": MGSConf, "rs": RSConf, "gld": GLDConf},
    "perturbation": {"none": NoPerturbationConf, "random": RandomConf, "adversarial": AdversarialConf,
                     "discrete": DiscreteConf},
    "alpha_map": {"softmax": SoftmaxConf, "argmax": ArgmaxConf, "dirichlet": DirichletConf, "gumbel": GumbelConf,
                  "gumbel_hard": GumbelHardConf, "sigmoid": SigmoidConf},
    "schedule": {"single": SingleConf, "progressive": ProgressiveConf, "widening": WideningConf},
    "selection": {"argmax": ArgmaxSelectionConf, "perturbation": PerturbationSelectionConf},
}


# ------------------------------------------------------------------------------- benchmarks
class BenchmarkOption:
    """A benchmark table that scores the derived cell (``benchmark=NAME``)."""

    axis: ClassVar[str] = "benchmark"
    capabilities: ClassVar[tuple[str, ...]] = ("has_table", "space_refusal")
    #: The option has a table to open and look cells up in.
    has_table: ClassVar[bool] = True

    def space_refusal(self, space: Any) -> Optional[str]:
        """Why the table cannot score the cells of ``space`` (a SpaceConf), or None when it can.
        Base: refused, so a table that does not say which cells it scores is never looked up blindly."""
        return "the table does not say which cells it scores"


@dataclass
class NoBenchmarkConf(BenchmarkOption):
    """No benchmark table: the derived cell is not looked up."""

    name: str = "none"
    has_table = False

    def space_refusal(self, space: Any) -> Optional[str]:
        return None

    def __post_init__(self) -> None:
        _own_name("benchmark", self)


@dataclass
class NB201BenchmarkConf(BenchmarkOption):
    """A NAS-Bench-201 table the user supplies (``path``): a CSV with an ``arch`` column and metric columns,
    or the official topology file read through its API package (``kind``: auto, csv, nb201_api)."""

    name: str = "nb201"
    path: str = ""  # the table: a CSV with an arch column, or the official file
    kind: str = "auto"  # auto | csv | nb201_api
    has_table = True

    def space_refusal(self, space: Any) -> Optional[str]:
        fits = space.skeleton == "nb201" and space.nodes == 3
        return None if fits else "the NAS-Bench-201 table scores only space=nb201 cells"

    def __post_init__(self) -> None:
        _own_name("benchmark", self)
        check(bool(self.path.strip()), "benchmark.path", self.path,
              "the table file: benchmark.path=FILE (a CSV with an arch column, or the official NAS-Bench-201 file)")
        one_of("benchmark.kind", self.kind, ("auto", "csv", "nb201_api"))


#: Benchmark tables that score the derived cell after every epoch.
BENCHMARKS: dict[str, type] = {"none": NoBenchmarkConf, "nb201": NB201BenchmarkConf}
#: Every config group whose options are dataclasses stored in Hydra's ConfigStore (not YAML files).
STORED_GROUPS: dict[str, dict[str, type]] = {**AXES, "benchmark": BENCHMARKS}


def option_keys(schema: type) -> list[str]:
    """The keys a user may set on an option (every field)."""
    return [f.name for f in fields(schema)]


def owners_of(key: str) -> list[str]:
    """``group=option`` of every option that has ``key`` (for "this key belongs to ..." messages)."""
    return [f"{axis}={name}" for axis, options in AXES.items() for name, schema in options.items()
            if key in option_keys(schema) and key != "name"]
