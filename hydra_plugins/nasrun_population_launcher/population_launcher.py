"""``hydra/launcher=population``: registered where Hydra looks for launchers; the code is nasrun's."""

from hydra.core.config_store import ConfigStore

from nasrun.cli.population_launcher import PopulationLauncherBase, PopulationLauncherConf

ConfigStore.instance().store(group="hydra/launcher", name="population", node=PopulationLauncherConf,
                             provider="nasrun")


class PopulationLauncher(PopulationLauncherBase):
    """nasrun's population launcher (see :mod:`nasrun.cli.population_launcher`)."""
