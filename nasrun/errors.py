"""User-facing errors: each one ends a command with exit status 2 and a single clear line."""


class NasrunError(Exception):
    """A problem with what the user asked for (config, genotype, data), not a bug."""

    exit_code = 2


class ConfigError(NasrunError):
    """A config value is out of range or inconsistent with another value."""


class GenotypeError(NasrunError):
    """A genotype name, file or run folder cannot be used."""


class DataError(NasrunError):
    """A dataset cannot be found or read."""


class RunFolderError(NasrunError):
    """A run folder holds something that does not match the command (e.g. another config)."""
