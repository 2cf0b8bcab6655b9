"""Architecture-gradient estimators and alpha perturbations: the axes a method preset picks from."""

from nasrun.methods.estimators import ESTIMATORS, ArchBatch, Estimator, make_estimator
from nasrun.methods.perturbations import PERTURBATIONS, Perturbation, make_perturbation

__all__ = ["ESTIMATORS", "PERTURBATIONS", "ArchBatch", "Estimator", "Perturbation", "make_estimator",
           "make_perturbation"]
