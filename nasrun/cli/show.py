"""`nasrun show genotype=X [recipe=...] [--plot]`: a genotype, and the size of the network it gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.config.labels import genotype_label

USAGE = ("usage: nasrun show genotype=<name | genotype.json | search run folder> [recipe=cifar|imagenet|nb201|quick] "
         "[dataset=NAME] [recipe.C=..] [recipe.layers=..] [--plot[=FILE.png]]\n\n"
         "Prints the genotype, and the parameter count and multiply-adds of the network it gives at the\n"
         "recipe's size (the auxiliary head is counted separately). --plot draws the normal and reduction\n"
         "cells (default file: cells_<genotype>.png). Published genotypes: ")


def _plot_target(args: list[str]) -> tuple[list[str], str | None]:
    plot_to = None
    for a in [a for a in args if a == "--plot" or a.startswith("--plot=")]:
        args = [b for b in args if b != a]
        plot_to = a.partition("=")[2]
    return args, plot_to


def _plot_path(plot_to: str, genotype_spec: str) -> Path:
    """Where to draw; the folder must exist already (show never creates folders)."""
    path = Path(plot_to or f"cells_{genotype_label(genotype_spec)}.png")
    if not path.parent.is_dir():
        raise ConfigError(f"--plot={plot_to}: the folder {path.parent} does not exist")
    return path


def space_config(genotype: Any, run_folder: Optional[Path]) -> Any:
    """The space a genotype was searched in: the search run's own config, else the description the genotype
    carries, else the shipped space of that name."""
    from nasrun.train.inputs import genotype_space

    saved = genotype_space(genotype, run_folder)
    if saved is not None:
        return saved
    return to_typed(compose("retrain", ["genotype=DARTS_V2", f"space={genotype.space}"])).space


def describe_space(space: Any, genotype: Any) -> str:
    """One line: the space and how many architectures it holds (exact, and as a power of ten)."""
    import math

    layers = len(genotype.cells) if not genotype.shared else 3
    size = space.size(layers)
    where = f", {layers} cells" if not genotype.shared else ""
    note = "" if genotype.space_hash in (None, space.hash()) else "; the space's description has changed since"
    return (f"space: {space.name} ({space.derivation} derivation, {space.sharing} cells{where}): {size:,} "
            f"architectures (10^{math.log10(size):.2f}){note}")


def show(args: list[str]) -> None:
    """Print the genotype, its network's parameters and multiply-adds; draw its cells with --plot."""
    from nasrun.genotype.genotype import PUBLISHED

    if any(a in ("-h", "--help") for a in args):
        print(USAGE + ", ".join(sorted(PUBLISHED)))
        return
    args, plot_to = _plot_target(args)
    unknown = [a for a in args if a.startswith("-") or "=" not in a]
    if unknown:
        raise ConfigError(f"unexpected argument {unknown[0]!r}; arguments are overrides such as genotype=DARTS_V2")
    typed = to_typed(compose("retrain", args))
    path = _plot_path(plot_to, typed.genotype) if plot_to is not None else None
    from nasrun.train.inputs import cells_for, layers_named, resolve_inputs
    from nasrun.train.retrain import build_network, describe_network

    genotype, run_folder, dataset = resolve_inputs(typed)
    typed = cells_for(genotype, typed, layers_given=layers_named(args))
    info = describe_network(build_network(genotype, typed, dataset), dataset)
    from nasrun.spaces.space import Space

    space = Space(space_config(genotype, run_folder))
    r = typed.recipe
    print(f"genotype: {typed.genotype}" + (f"  (search run {run_folder})" if run_folder else ""))
    print(genotype)
    print(f"network: recipe={r.name}, C={r.C}, recipe.layers={r.layers} ({space.layers_meaning}), {dataset.name} "
          f"({dataset.in_channels}x{dataset.image_size}x{dataset.image_size}, {dataset.num_classes} classes)")
    aux = info["params_with_auxiliary"] - info["params"]
    print(f"parameters: {info['params'] / 1e6:.2f}M ({info['params']:,}) without the auxiliary head"
          + (f"; auxiliary head {aux:,} more" if aux else ""))
    print(f"multiply-adds: {info['macs'] / 1e6:.1f}M per image (inference, auxiliary head not run)")
    print(describe_space(space, genotype))
    if path is not None:
        from nasrun.report.cell_diagram import plot_genotype

        plot_genotype(genotype, path, title=genotype_label(typed.genotype))
        print(f"cell diagrams: {path}")
