"""The method axes: estimators, perturbations, alpha maps, schedules and selections, composed by the search loop."""

from nasrun.methods.estimators import ArchBatch, ArchGrad, Estimator, apply_arch_step
from nasrun.methods.objective import ArchObjective
from nasrun.methods.perturbations import Perturbation
from nasrun.methods.registry import make_alpha_map, make_estimator, make_perturbation, make_schedule, make_selection

__all__ = ["ArchBatch", "ArchGrad", "ArchObjective", "Estimator", "Perturbation", "apply_arch_step",
           "make_alpha_map", "make_estimator", "make_perturbation", "make_schedule", "make_selection"]
