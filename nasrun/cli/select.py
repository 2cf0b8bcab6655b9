"""`nasrun select genotype=<search run folder> selection=perturbation`: a selection run on a finished search.

The search's supernet (its last checkpoint) is selected again with another selection, into a folder beside
the search's own files, ``<search folder>/select_<name>/``; or its final weights are read again by another
rule (``selection.rule``, ``selection.threshold``: ``select_<rule>/``), which also recovers a search whose
threshold left a cell without an edge. That folder is a search run folder of its own:
the search's metrics, genotypes and alpha history, then the selection's tuning epochs (``selection.jsonl``),
its ``genotype.json`` and ``result.json``; ``nasrun retrain genotype=<that folder>`` retrains the selected
genotype, and rerunning the command resumes an interrupted selection. The search's own files are not touched.

The search's config is composed again from the overrides Hydra saved for it, with the selection's keys
changed; a config that no longer composes the same (nasrun's defaults changed since) is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nasrun.config.compose import as_plain_dict, compose, to_typed
from nasrun.errors import ConfigError

USAGE = ("usage: nasrun select genotype=<search run folder> [selection=perturbation|argmax] [selection.KEY=VALUE ...] "
         "[device=auto|cpu|cuda] [threads=N] [progress=false]\n\n"
         "Selects the genotype of a finished search again, from the search's last checkpoint: with DARTS-PT's\n"
         "perturbation-based selection (selection=perturbation, the default), or by reading the final weights with\n"
         "another rule (selection.rule=space|pairs|threshold, selection.threshold=T). Writes the folder\n"
         "<search run folder>/select_<selection or rule>/ (genotype.json, result.json, search.log; selection.jsonl\n"
         "for perturbation) and leaves the search's own files as they are. Keys of selection=perturbation: interval\n"
         "(5), crit (acc|loss), lr_divisor (10), eval_images (null: every search-val image), lr_schedule\n"
         "(constant|cosine).")
#: Keys of the run itself that the select command may set (they change no result).
RUN_KEYS = ("device", "threads", "progress")
#: Files of the search copied into the selection's folder (its history up to the last epoch).
HISTORY = ("metrics.jsonl", "genotypes.jsonl", "alphas.npz", "stages.json")


def select(args: list[str]) -> None:
    """Check the command line and the search folder, then run the selection and print where its genotype is."""
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return
    pairs = _pairs(args)
    folder = _search_folder(pairs.pop("genotype", None))
    result = _finished_search(folder)
    command, saved = _saved_overrides(folder)
    own = [f"{k}={v}" for k, v in pairs.items()]
    if "selection" not in pairs:  # reading the weights again by a rule, or DARTS-PT's selection
        reads = any(k in pairs for k in ("selection.rule", "selection.threshold"))
        own.insert(0, "selection=argmax" if reads else "selection=perturbation")
    kept = [o for o in saved if not _key(o).startswith(("selection",) + RUN_KEYS)]
    typed = to_typed(compose(command, [*kept, *own]))
    _check_same_search(folder, result, typed)
    out = folder / _folder_name(typed.selection, (result.get("config") or {}).get("selection") or {})
    from nasrun.search.loop import run_search

    _prepare(folder, out, as_plain_dict(typed))
    from nasrun.run.folder import LOG_FORMAT

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    done = run_search(typed, out)
    print(f"nasrun select: {out / 'genotype.json'}")
    from nasrun.genotype.genotype import Genotype

    how = f"selection={typed.selection.name}" + (f", rule {typed.selection.rule}" if not typed.selection.tunes else "")
    print(f"genotype ({how}):\n{Genotype.from_dict(done['genotype'])}")


def _folder_name(selection: Any, searched: dict) -> str:
    """``select_<name>`` for a selection that tunes; ``select_<rule>`` (with its threshold) for a reading of the
    final weights by another rule than the search's own."""
    if selection.tunes:
        return f"select_{selection.name}"
    same = (searched.get("name"), searched.get("rule", "space"), searched.get("threshold", selection.threshold))
    if same == (selection.name, selection.rule, selection.threshold):
        raise ConfigError(f"selection.rule={selection.rule}: the search's genotype.json is that reading already; "
                          "choose selection=perturbation, or another selection.rule or selection.threshold")
    return f"select_{selection.rule}" + (f"_{selection.threshold:g}" if selection.rule == "threshold" else "")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _pairs(args: list[str]) -> dict[str, str]:
    """``key=value`` arguments, each key at most once; only the selection's keys, the folder and the run's own."""
    pairs: dict[str, str] = {}
    for a in args:
        key, eq, value = a.partition("=")
        if not eq or a.startswith("-"):
            raise ConfigError(f"unexpected argument {a!r}; arguments are key=value, e.g. genotype=<search run folder>")
        if not (key in ("genotype", "selection", *RUN_KEYS) or key.startswith("selection.")):
            raise ConfigError(f"{key}={value}: select takes genotype, selection, selection.KEY, "
                              f"{', '.join(RUN_KEYS)}; the rest of the config is the search's own")
        if key in pairs:
            raise ConfigError(f"{key} is given twice ({pairs[key]!r} and {value!r})")
        pairs[key] = value
    return pairs


def _search_folder(spec: Any) -> Path:
    if not spec:
        raise ConfigError("genotype must be given, e.g. genotype=<search run folder> (a finished search's folder)")
    path = Path(spec)
    if path.is_dir() and (path / "search" / "result.json").is_file():  # a pipeline job: its search
        path = path / "search"
    if not path.is_dir():
        raise ConfigError(f"genotype={spec}: not a folder; select needs a finished search run folder")
    return path


def _saved_overrides(folder: Path) -> tuple[str, list[str]]:
    """The command and the overrides Hydra saved for the search (a pipeline job's for its search stage)."""
    from nasrun.run.saved_config import saved_overrides

    places = [("search", folder / ".hydra")]
    if folder.name == "search":  # a pipeline job's search stage: the job's saved command line
        places.append(("pipeline", folder.parent / ".hydra"))
    for command, hydra_dir in places:
        path = hydra_dir / "overrides.yaml"
        if path.is_file():
            saved = saved_overrides(path)
            if saved is None or not all(isinstance(o, str) for o in saved):
                raise ConfigError(f"{path}: not the list of overrides Hydra saved; it is the search's command line, "
                                  "which select composes again")
            return command, saved
    raise ConfigError(f"genotype={folder}: no .hydra/overrides.yaml; select needs a search run by `nasrun search` or "
                      "`nasrun pipeline` (its saved command line gives the supernet's config)")


def _finished_search(folder: Path) -> dict:
    from nasrun.run.folder import read_result

    result = read_result(folder)
    read_failed = result is not None and result.get("status") == "failed" and \
        str(result.get("reason", "")).startswith("selection.")  # every epoch ran; only reading the genotype failed
    if result is None or result.get("command", "search") != "search" or \
            (result.get("status") != "completed" and not read_failed):
        state = "no result.json" if result is None else f"status {result.get('status')!r}"
        raise ConfigError(f"genotype={folder}: not a finished search ({state}); select reads a completed search's "
                          "last checkpoint")
    if result.get("selection", {}).get("name", "argmax") != "argmax":
        raise ConfigError(f"genotype={folder}: the search ran selection={result['selection']['name']} already "
                          "(its genotype.json is that selection's); select needs a search that ended at the argmax")
    if not (folder / "checkpoint.pt").is_file():
        raise ConfigError(f"genotype={folder}: checkpoint.pt is missing; select starts from the search's last "
                          "checkpoint")
    return result


def _check_same_search(folder: Path, result: dict, typed: Any) -> None:
    """The composed config must be the search's, but for the selection and the run's own keys."""
    from nasrun.run.checkpoint import config_differences, shown_differences

    def core(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in ("selection", *RUN_KEYS)}

    diffs = config_differences(core(result.get("config") or {}), core(as_plain_dict(typed)))
    if diffs:
        raise ConfigError(f"genotype={folder}: its saved command line no longer composes the config the search ran "
                          f"with ({shown_differences(diffs)}); select cannot rebuild its supernet")


def _prepare(folder: Path, out: Path, config: dict) -> None:
    """The selection's folder: the search's history and its last checkpoint under the selection's config
    (nothing to do once the folder has a checkpoint of its own: the selection resumes from it)."""
    from nasrun.run.checkpoint import read_checkpoint_file, validate_checkpoint
    from nasrun.run.files import atomic_write_bytes
    from nasrun.run.folder import RunFolder
    from nasrun.search.state import CHECKPOINT_SCHEMA

    if (out / "checkpoint.pt").is_file():
        return
    path = folder / "checkpoint.pt"
    ckpt = validate_checkpoint(path, read_checkpoint_file(path), CHECKPOINT_SCHEMA)
    with RunFolder(out, "search") as run:
        for name in HISTORY:
            if (folder / name).is_file():
                atomic_write_bytes(out / name, (folder / name).read_bytes())
        run.save_checkpoint({**ckpt, "config": config})
