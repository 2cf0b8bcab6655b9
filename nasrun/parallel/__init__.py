"""Several processes: torchrun ranks, the search and retraining on them, and Slurm jobs of several tasks."""
