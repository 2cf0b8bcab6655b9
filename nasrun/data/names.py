"""The names of the datasets nasrun can load, without importing torch (``dataset.name`` is checked against
them before any work starts; :func:`nasrun.data.load.load_dataset` has a loader for each, and a test keeps
the two, and the ``dataset`` config files, equal)."""

DATASET_NAMES: tuple[str, ...] = ("cifar10", "cifar100", "svhn", "imagenet", "fashion_mnist", "digits", "synthetic")
