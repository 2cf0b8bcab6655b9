"""The implementation of every axis option, keyed by its config schema (the names live in ``nasrun.config.options``).

A new estimator, perturbation, alpha map, schedule or selection is a class here plus its schema in
``nasrun.config.options.AXES``; a test checks that the two lists cover each other. What an option can
do (runs under torchrun, takes a double backward, trains single paths, ...) is declared on its schema,
where the torch-free checks ask it, never here.
"""

from __future__ import annotations

from typing import Any, Optional

from nasrun.methods.alpha_maps import AlphaMap, Argmax, Softmax
from nasrun.methods.sampling_maps import Dirichlet, Gumbel, GumbelHard, Sigmoid
from nasrun.methods.estimators import Amended, Estimator, FirstOrder, SecondOrder
from nasrun.methods.nasp import Discrete, Proximal
from nasrun.methods.objective import ArchObjective
from nasrun.methods.perturbations import AdversarialPGD, NoPerturbation, Perturbation, RandomSmoothing
from nasrun.methods.schedules import Progressive, Schedule, Single, Widening
from nasrun.methods.selections import ArgmaxSelection, PerturbationSelection, Selection
from nasrun.methods.zarts import GLD, MGS, RS
from nasrun.config import options as o
ESTIMATORS: dict[type, type[Estimator]] = {
    o.FirstOrderConf: FirstOrder, o.SecondOrderConf: SecondOrder, o.AmendedConf: Amended, o.ProximalConf: Proximal,
    o.MGSConf: MGS, o.RSConf: RS, o.GLDConf: GLD,
}
PERTURBATIONS: dict[type, type[Perturbation]] = {
    o.NoPerturbationConf: NoPerturbation, o.RandomConf: RandomSmoothing, o.AdversarialConf: AdversarialPGD,
    o.DiscreteConf: Discrete,
}
ALPHA_MAPS: dict[type, type[AlphaMap]] = {o.SoftmaxConf: Softmax, o.ArgmaxConf: Argmax, o.DirichletConf: Dirichlet,
                                          o.GumbelConf: Gumbel, o.GumbelHardConf: GumbelHard, o.SigmoidConf: Sigmoid}
SCHEDULES: dict[type, type[Schedule]] = {o.SingleConf: Single, o.ProgressiveConf: Progressive,
                                         o.WideningConf: Widening}
SELECTIONS: dict[type, type[Selection]] = {o.ArgmaxSelectionConf: ArgmaxSelection,
                                           o.PerturbationSelectionConf: PerturbationSelection}
IMPLEMENTATIONS: dict[str, dict[type, type]] = {"estimator": ESTIMATORS, "perturbation": PERTURBATIONS,
                                                "alpha_map": ALPHA_MAPS, "schedule": SCHEDULES,
                                                "selection": SELECTIONS}


def make_estimator(conf: Any, objective: Optional[ArchObjective] = None) -> Estimator:
    return ESTIMATORS[type(conf)](conf, objective)


def make_perturbation(conf: Any, objective: Optional[ArchObjective] = None) -> Perturbation:
    return PERTURBATIONS[type(conf)](conf, objective)


def make_alpha_map(conf: Any) -> AlphaMap:
    return ALPHA_MAPS[type(conf)](conf)


def make_selection(conf: Any) -> Selection:
    return SELECTIONS[type(conf)](conf)


def make_schedule(conf: Any, layers: int, skip_dropout: list[float], epochs: int, warmup: int) -> Schedule:
    return SCHEDULES[type(conf)](conf, layers, skip_dropout, epochs, warmup)
