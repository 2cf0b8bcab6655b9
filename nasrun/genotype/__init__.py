"""Genotypes: the cells a search derives and a retrain builds, their file format checks and benchmark tables."""
