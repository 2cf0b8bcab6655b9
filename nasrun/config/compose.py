"""Composition: ``nasrun <command> overrides...`` turned into a validated config, with or without the CLI.

Hydra composes the YAML groups over the schemas; :func:`to_typed` runs every check of the schemas.
Every problem becomes one :class:`ConfigError` line naming the key, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from nasrun.config.compose_errors import CONFIG_MODULE, check_appends, check_booleans, explain, one_line, unresolvable
from nasrun.config.options import STORED_GROUPS
from nasrun.config.schema import NasrunConf
from nasrun.errors import ConfigError, NasrunError


COMMAND_CONFIGS = ("search", "retrain", "pipeline")


def register() -> None:
    """Put the schemas and the axis options into Hydra's ConfigStore, and the resolvers the configs use.

    Idempotent; called by :func:`compose` and by the CLI before Hydra starts.
    """
    from hydra.core.config_store import ConfigStore

    from nasrun.config.labels import genotype_label, job_label, unique_id

    cs = ConfigStore.instance()
    schema = OmegaConf.structured(NasrunConf)
    for group in STORED_GROUPS:  # left open in the schema: a preset or group=NAME fills each with its option
        schema[group] = MISSING
    cs.store(name="nasrun_schema", node=schema)
    for group, options in STORED_GROUPS.items():
        for name, option in options.items():
            cs.store(group=group, name=name, node=option)
    for name, fn, cache in (("nasrun_label", genotype_label, False), ("nasrun_job", job_label, False),
                            ("nasrun_uid", unique_id, True), ("nasrun_if", choose, False)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cache)


def choose(value: Any, match: Any, then: Any, otherwise: Any) -> Any:
    """``${nasrun_if:${dataset.name},cifar10,36,16}``: a preset value that depends on another choice."""
    return then if str(value) == str(match) else otherwise


def compose(command: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The composed (not yet validated) config of ``nasrun <command> overrides...``, without the CLI.

    Problems Hydra would report in its own words (unknown key, wrong type, unknown option, ``+key``)
    raise :class:`ConfigError` with one line that names the key, the value and what is allowed.
    """
    if command not in COMMAND_CONFIGS:
        raise ConfigError(f"unknown command {command!r}; one of {', '.join(COMMAND_CONFIGS)}")
    from nasrun.config.overrides import quote_genotype

    register()
    overrides = quote_genotype(list(overrides))
    check_appends(command, overrides, hydra_compose_raw)
    try:
        cfg = hydra_compose_raw(command, overrides)
    except NasrunError:
        raise
    except Exception as exc:  # noqa: BLE001 - every Hydra/OmegaConf error becomes one ConfigError line
        raise explain(command, overrides, exc, hydra_compose_raw) from None
    check_booleans(cfg, overrides)
    return cfg


def hydra_compose_raw(command: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    """Hydra's own composition, errors unchanged (``hydra=True`` includes the ``hydra`` node: launcher, run dir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
        return hydra_compose(config_name=command, overrides=overrides, return_hydra_config=hydra)


def to_typed(cfg: DictConfig) -> NasrunConf:
    """Turn a composed config into dataclasses, running every check; raise ConfigError on any problem."""
    from omegaconf.errors import InterpolationResolutionError

    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            hint = (" (a published name such as DARTS_V2, a genotype.json or a search run folder)"
                    if "genotype" in missing else "")
            raise ConfigError(f"{', '.join(missing)} must be given, e.g. {missing[0]}=...{hint}")
        typed = OmegaConf.to_object(cfg)
    except NasrunError:
        raise
    except InterpolationResolutionError as exc:  # ${oc.env:UNSET}, ${seed} in seed: a bad value
        raise ConfigError(unresolvable(cfg, exc)) from None
    except Exception as exc:  # omegaconf wraps errors raised inside __post_init__
        cause = exc.__cause__ or exc.__context__
        while cause is not None:
            if isinstance(cause, NasrunError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        key = getattr(exc, "full_key", None)
        raise ConfigError((f"{key}: " if key and key not in one_line(exc) else "") + one_line(exc)) from None
    if not isinstance(typed, NasrunConf):
        raise ConfigError(f"the composed config is a {type(typed).__name__}, not a nasrun config")
    return typed


def as_plain_dict(cfg: NasrunConf | DictConfig) -> dict:
    """A JSON-friendly dict of a config (for result.json and config comparison)."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
