"""Time of one first-order search step in every shipped search space, and the size of its supernet.

    python scripts/bench_spaces.py                          # CPU, 1 thread, C=8, batch 64 of 3x16x16
    python scripts/bench_spaces.py --spaces darts nb201 --repeats 10 --threads 2
    python scripts/bench_spaces.py --repeats 1 --warmup 0 --batch 8   # a quick check that it runs

For every space of ``nasrun/conf/space/*.yaml`` (or ``--spaces``) the config
``space=<name> method=darts`` is composed and a :class:`nasrun.search.state.SearchState` built from it
(the supernet, both optimisers, the first-order estimator, no perturbation). One step is one call of
``nasrun.search.loop.train_epoch`` on streams of ``batches_per_pass = 1``: exactly what the search loop
does per step, an architecture step on a validation batch (first-order estimator, Adam) then a weight
step on the training batch (SGD, gradient clipping). The streams cycle through a few fixed random
batches, so data loading and augmentation are not timed.

Depth: ``supernet.layers`` means cells in the DARTS stack for the DARTS-skeleton spaces (``--layers``,
default 5: reductions at cells 1 and 3) and cells per stage for nb201 (``--nb201-layers``, default 2:
3 stages of 2 cells joined by residual blocks, 6 cells).

Printed per space, after ``--warmup`` untimed steps: the wall-clock median, minimum and maximum of
``--repeats`` timed steps (on the CPU with ``torch.set_num_threads(--threads)``; on a GPU after
synchronising), the edges of a cell, the alpha sets (one per cell type, or one per cell position for
spaces with independent cells), the number of cells and ``params``: every parameter of the
supernet (weights, alphas and any betas)::

    space=darts edges=14 alphas=normal,reduce cells=5 params=123456 step_ms_median=12.3 (min 11.9, max 13.0)

On a shared machine compare figures only from the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import nasrun.conf
from nasrun.config.compose import compose, to_typed
from nasrun.methods import ArchObjective, make_estimator, make_perturbation, make_schedule
from nasrun.search.loop import train_epoch
from nasrun.search.state import SearchState
from nasrun.spaces.ops import NOISE
from nasrun.spaces.space import Space


def shipped_spaces() -> list[str]:
    """The names of the space config group: the *.yaml files under nasrun/conf/space/."""
    return sorted(p.stem for p in (Path(nasrun.conf.__file__).parent / "space").glob("*.yaml"))


class RandomStream:
    """Stands in for a BatchStream: cycles through a few fixed random batches, one batch per pass."""

    def __init__(self, batches: list) -> None:
        self.batches, self.i, self.batches_per_pass = batches, 0, 1

    def __iter__(self):
        return self

    def __next__(self):
        self.i += 1
        return self.batches[self.i % len(self.batches)]

    def state_dict(self) -> dict:
        return {"i": self.i}


def build(name: str, args: argparse.Namespace, device: torch.device):
    """The search state of ``space=<name> method=darts`` at the benchmark's size, and its first epoch's plan."""
    skeleton = compose("search", [f"space={name}"]).space.skeleton
    layers = args.nb201_layers if skeleton == "nb201" else args.layers
    overrides = [f"space={name}", "method=darts", f"supernet.C={args.C}", f"supernet.layers={layers}",
                 f"search.batch_size={args.batch}", "search.arch_warmup_epochs=0", "progress=false"]
    cfg = to_typed(compose("search", overrides))
    torch.manual_seed(0)
    NOISE.seed(0)  # R-DARTS S4's noise op draws from its own generator

    def batches(n: int) -> list:
        shape = (args.batch, args.channels, args.size, args.size)
        return [(torch.randn(shape, device=device), torch.randint(0, args.classes, (args.batch,), device=device))
                for _ in range(n)]

    schedule = make_schedule(cfg.schedule, cfg.supernet.layers, list(cfg.supernet.skip_dropout), cfg.search.epochs,
                             cfg.search.arch_warmup_epochs)
    objective = ArchObjective()
    state = SearchState(cfg, args.classes, args.channels, device, schedule, make_estimator(cfg.estimator, objective),
                        make_perturbation(cfg.perturbation, objective), RandomStream(batches(2)),
                        RandomStream(batches(2)))
    return state, schedule.plan(0), Space(cfg.space)


def step_times(state: SearchState, plan, args: argparse.Namespace, device: torch.device) -> list[float]:
    """Seconds of each timed step (one train_epoch of one step each), after the warm-up steps."""
    lr = state.cfg.search.lr
    times = []
    for i in range(args.warmup + args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        train_epoch(state, plan, lr)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", nargs="+", default=None, help="space names (default: every shipped space)")
    p.add_argument("--C", type=int, default=8, help="supernet width (supernet.C)")
    p.add_argument("--layers", type=int, default=5, help="cells of the DARTS-skeleton spaces")
    p.add_argument("--nb201-layers", type=int, default=2, help="cells per stage (3 stages) of nb201")
    p.add_argument("--batch", type=int, default=64, help="batch of each split (training and validation)")
    p.add_argument("--size", type=int, default=16, help="image height and width")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=5, help="timed steps (the median is reported)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.spaces or shipped_spaces()
    unknown = sorted(set(names) - set(shipped_spaces()))
    if unknown:
        p.error(f"unknown space(s) {', '.join(unknown)}; shipped: {', '.join(shipped_spaces())}")

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"
    print(f"one first-order search step (architecture step + weight step, nasrun.search.loop.train_epoch); "
          f"C={args.C}; cells: {args.layers} (DARTS stack) or {args.nb201_layers} per stage x 3 stages (nb201); "
          f"batch {args.batch} per split of {args.channels}x{args.size}x{args.size}; {where}; "
          f"torch {torch.__version__}; median of {args.repeats} steps after {args.warmup}; "
          f"load average {load} on {os.cpu_count()} cpus", flush=True)
    failed = 0
    for name in names:
        try:
            state, plan, space = build(name, args, device)
            times = [t * 1000 for t in step_times(state, plan, args, device)]
        except Exception as exc:  # noqa: BLE001 - report the space and go on with the others
            failed += 1
            print(f"space={name} failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        model = state.model
        params = sum(p.numel() for p in model.parameters())
        print(f"space={name} edges={space.num_edges} alphas={','.join(model.kinds)} cells={len(model.cells)} "
              f"params={params} step_ms_median={statistics.median(times):.1f} "
              f"(min {min(times):.1f}, max {max(times):.1f})", flush=True)
        del state, model
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
