"""nasrun: an experiment runner for differentiable neural architecture search."""

__version__ = "0.1.0"
