"""The run folder and its lifecycle: files, checkpoints, results, signals, sweeps and the pipeline job."""
