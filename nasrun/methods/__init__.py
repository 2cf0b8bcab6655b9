"""Architecture-gradient estimators and alpha perturbations: the axes a method preset picks from."""

from nasrun.methods.estimators import ESTIMATORS, ArchBatch, Estimator, make_estimator

__all__ = ["ESTIMATORS", "ArchBatch", "Estimator", "make_estimator"]
