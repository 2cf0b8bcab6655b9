"""The options of every method axis: one dataclass per option, one registry per axis.

A method is a choice on four independent axes (DESIGN.md): the architecture-gradient
**estimator**, the **perturbation** of the mixing weights in the weight step, the **alpha map**
that turns alphas into mixing weights (with its regulariser), and the **schedule** of stages.
Each axis is a Hydra config group whose options are the dataclasses below, registered in
:data:`AXES`, the single source of the allowed names. An option holds only its own keys, so a key
of another option (``estimator.eta`` under ``estimator=first_order``) is refused when composing.
``__post_init__`` checks ranges; it runs when the composed config is turned into objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

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


def _own_name(group: str, option: object) -> None:
    """``name`` says which option this is; changing it by hand would mislabel the run."""
    expected = type(option).__dataclass_fields__["name"].default  # type: ignore[attr-defined]
    check(option.name == expected, f"{group}.name", option.name,  # type: ignore[attr-defined]
          f"{expected!r} (choose another option with {group}=NAME instead)")


# ------------------------------------------------------------------------------- estimators
@dataclass
class FirstOrderConf:
    """DARTS first order: the gradient of the validation loss at the current weights."""

    name: str = "first_order"

    def __post_init__(self) -> None:
        _own_name("estimator", self)


@dataclass
class SecondOrderConf:
    """DARTS second order: one unrolled SGD step; B v' at the current weights, by a central difference of
    radius ``fd_radius`` (``hvp=finite_difference``, as the reference code) or by double backward (``exact``)."""

    name: str = "second_order"
    hvp: str = "finite_difference"
    fd_radius: float = 0.01  # r in epsilon = r / ||v'|| of the finite difference

    def __post_init__(self) -> None:
        _own_name("estimator", self)
        one_of("estimator.hvp", self.hvp, HVP_MODES)
        positive("estimator.fd_radius", self.fd_radius)


@dataclass
class AmendedConf:
    """Amended-DARTS: g1 - eta * B (H v) at the current weights on the step's training batch."""

    name: str = "amended"
    eta: float = 0.1  # weight of the amending term (0 = first-order DARTS)
    hvp: str = "finite_difference"  # finite_difference (as the reference) | exact (double backward)
    fd_radius: float = 0.01  # r in epsilon = r / ||direction|| of both products

    def __post_init__(self) -> None:
        _own_name("estimator", self)
        non_negative("estimator.eta", self.eta)
        one_of("estimator.hvp", self.hvp, HVP_MODES)
        positive("estimator.fd_radius", self.fd_radius)


@dataclass
class ProximalConf:
    """NASP: the gradient at the discrete architecture, applied to the alphas, then the box [0, 1]."""

    name: str = "proximal"

    def __post_init__(self) -> None:
        _own_name("estimator", self)


@dataclass
class ZeroOrderConf:
    """What the ZARTS rules share: alpha moves every ``update_every`` weight steps; each of ``samples``
    candidates is scored after ``inner_steps`` SGD steps on a copy of the weights."""

    update_every: int = 10  # alpha moves once every this many weight steps
    inner_steps: int = 10  # SGD steps on a copy of the weights per candidate (0: score at the live weights)
    samples: int = 4  # candidate alphas per update
    inner_lr: float = 1e-3  # SGD lr of the fine-tuning
    inner_momentum: float = 0.0  # SGD momentum of the fine-tuning
    inner_weight_decay: float = 3e-4  # SGD weight decay of the fine-tuning
    inner_batch_size: int = 48  # images per fine-tuning step
    inner_data: str = "val"  # val | train: the half the fine-tuning batches come from

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
@dataclass
class NoPerturbationConf:
    """The weight step trains under the clean mixing weights."""

    name: str = "none"

    def __post_init__(self) -> None:
        _own_name("perturbation", self)


@dataclass
class DiscreteConf:
    """NASP: the weight step trains the single path of the projected one-hot architecture."""

    name: str = "discrete"

    def __post_init__(self) -> None:
        _own_name("perturbation", self)


@dataclass
class RandomConf:
    """SDARTS-RS: A + U(-eps, eps) with eps ramped from ``epsilon_start`` to ``epsilon``, put back on the simplex."""

    name: str = "random"
    epsilon: float = 0.3  # radius of the L-inf ball around the mixing weights
    epsilon_start: float = 0.03  # radius in the first epoch (linear ramp)
    epsilon_ramp: str = "code"  # code (as released) | to_max
    simplex: str = "renorm"  # renorm (as released) | project

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

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int("perturbation.pgd_steps", self.pgd_steps, hi=1000)
        if self.pgd_step_size is not None:
            positive("perturbation.pgd_step_size", self.pgd_step_size)


# ------------------------------------------------------------------------------- alpha maps
def _check_init(group: str, value: Optional[float]) -> None:
    if value is not None:
        finite(f"{group}.init", value)


@dataclass
class SoftmaxConf:
    """Mixing weights = softmax(alpha) per edge; ``init`` fills every alpha (null: 1e-3 * N(0, 1), as DARTS)."""

    name: str = "softmax"
    init: Optional[float] = None  # fill every alpha with this (null: 1e-3 * N(0, 1))

    def __post_init__(self) -> None:
        _own_name("alpha_map", self)
        _check_init("alpha_map", self.init)


@dataclass
class ArgmaxConf:
    """NASP: one-hot on the largest alpha other than ``none`` (straight-through); raw alphas in [0, 1].

    ``param_reg`` weighs NASP's parameter-size regulariser on the normal cell (0 = off, as released).
    """

    name: str = "argmax"
    init: Optional[float] = 0.5  # fill every alpha with this (NASP: 0.5)
    param_reg: float = 0.0  # NASP's parameter-size regulariser (0 = off)

    def __post_init__(self) -> None:
        _own_name("alpha_map", self)
        _check_init("alpha_map", self.init)
        non_negative("alpha_map.param_reg", self.param_reg)


# -------------------------------------------------------------------------------- schedules
def _check_max_skips(value: Optional[int]) -> None:
    if value is not None:
        int_range("schedule.max_skips", value, 0, 1000)


@dataclass
class SingleConf:
    """One stage of search.epochs epochs. ``max_skips`` caps the final normal cell's skip connections."""

    name: str = "single"
    max_skips: Optional[int] = None  # at most this many skips in the final normal cell (null = no limit)

    def __post_init__(self) -> None:
        _own_name("schedule", self)
        _check_max_skips(self.max_skips)

    @property
    def stages(self) -> int:
        return 1


@dataclass
class ProgressiveConf:
    """P-DARTS: stage i has supernet.layers + stage_add_layers[i] cells and ends keeping the
    stage_keep[i] strongest ops of every edge; search.epochs and arch_warmup_epochs are per stage."""

    name: str = "progressive"
    # cells added to supernet.layers in each stage
    stage_add_layers: list[int] = field(default_factory=lambda: [0, 6, 12])
    stage_keep: list[int] = field(default_factory=lambda: [5, 3, 1])  # ops each edge keeps at the end of each stage
    max_skips: Optional[int] = None  # at most this many skips in the final normal cell (null = no limit)

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


#: Axis -> option name -> schema. The Hydra groups, the CLI's help and the error messages read this.
AXES: dict[str, dict[str, type]] = {
    "estimator": {"first_order": FirstOrderConf, "second_order": SecondOrderConf, "amended": AmendedConf,
                  "proximal": ProximalConf, "mgs": MGSConf, "rs": RSConf, "gld": GLDConf},
    "perturbation": {"none": NoPerturbationConf, "random": RandomConf, "adversarial": AdversarialConf,
                     "discrete": DiscreteConf},
    "alpha_map": {"softmax": SoftmaxConf, "argmax": ArgmaxConf},
    "schedule": {"single": SingleConf, "progressive": ProgressiveConf},
}


# ------------------------------------------------------------------------------- benchmarks
@dataclass
class NoBenchmarkConf:
    """No benchmark table: the derived cell is not looked up."""

    name: str = "none"

    def __post_init__(self) -> None:
        _own_name("benchmark", self)


@dataclass
class NB201BenchmarkConf:
    """A NAS-Bench-201 table the user supplies (``path``): a CSV with an ``arch`` column and metric columns,
    or the official topology file read through its API package (``kind``: auto, csv, nb201_api)."""

    name: str = "nb201"
    path: str = ""  # the table: a CSV with an arch column, or the official file
    kind: str = "auto"  # auto | csv | nb201_api

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
