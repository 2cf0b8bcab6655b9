"""Retraining a genotype, and the training parts the search shares (SGD step, evaluation, precision, memory)."""
