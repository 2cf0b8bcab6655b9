"""Hydra finds nasrun's population launcher here (``hydra/launcher=population``)."""
