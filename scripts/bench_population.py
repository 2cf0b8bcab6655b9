"""Population search against its members run one after another: time, operators per step and memory.

    python scripts/bench_population.py                                # CPU, 1 thread, C=8, 5 cells, batch 32, 16 px
    python scripts/bench_population.py --C 16 --layers 8 --batch 64 --size 32   # the papers' size
    python scripts/bench_population.py --device cuda --members 1 2 4 8
    python scripts/bench_population.py --engine stacked               # the members stacked in one network

For each S in --members, a fresh process searches S seeds of one config on synthetic images in two
ways, in turn for --repeats rounds: as a population (``nasrun.run.population``) and as S solo searches
one after another in the same process (what Hydra's basic launcher does with a sweep). It prints per S

    members=S ops_per_step=N   ATen operators per population step in steady state: all members' work, with
                               their share of each epoch's evaluation and checkpoints (the difference between
                               populations of one epoch more and less, divided by the steps of an epoch)
    population / one-by-one    median wall time of the whole search, and per member-step
    peak_rss_mib               the process's peak resident memory (and peak CUDA memory on a GPU)

With ``--engine turns`` (the default) each member's step is its solo step (the members take turns, one
epoch each), so operators and time per member-step stay those of one search: the population saves the
process start, the imports and the dataset load, and keeps every member exact. With ``--engine stacked``
the members train in one network with a group per member (``nasrun.run.stacked``): one forward and
backward per step for all of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def overrides(args: argparse.Namespace) -> list[str]:
    return [
        "dataset=synthetic", f"dataset.num_train={args.images}", "dataset.num_test=64",
        f"dataset.image_size={args.size}", "dataset.in_channels=3", f"search.batch_size={args.batch}",
        f"search.epochs={args.epochs}", f"supernet.C={args.C}", f"supernet.layers={args.layers}",
        f"method={args.method}", f"device={args.device}", f"threads={args.threads}", "progress=false",
    ]


def one_size(args: argparse.Namespace, members: int) -> dict:
    """In this process: the population and the one-by-one searches of ``members`` seeds, timed in turn."""
    import resource

    import torch

    from nasrun.config.compose import compose, to_typed
    from nasrun.run.population import Member, run_population
    from nasrun.search.loop import run_search

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import OpCounter

    configs = [to_typed(compose("search", [*overrides(args), f"seed={s}"])) for s in range(members)]
    steps = -(-args.images // 2 // args.batch) * args.epochs * members  # member-steps of one search of all

    def as_population(tmp: Path) -> None:
        run_population([Member(c, tmp / f"p{i}") for i, c in enumerate(configs)], args.engine)

    def one_after_another(tmp: Path) -> None:
        for i, c in enumerate(configs):
            run_search(c, tmp / f"s{i}")

    with tempfile.TemporaryDirectory() as tmp:
        run_search(configs[0], Path(tmp) / "warm-up")  # first-call costs (imports, allocator) out of the timings
    times: dict = {as_population: [], one_after_another: []}
    for round_ in range(args.repeats):  # in turn, the first one alternating, so a busy machine slows both alike
        for way in (list(times) if round_ % 2 == 0 else list(times)[::-1]):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                way(Path(tmp))
                times[way].append(time.perf_counter() - t0)
    population, one_by_one = times[as_population], times[one_after_another]
    counts = []
    for extra in (0, 1):  # the population with one epoch more: the difference is one epoch in steady state
        longer = [to_typed(compose("search", [*overrides(args), f"seed={s}", f"search.epochs={args.epochs + extra}"]))
                  for s in range(members)]
        with tempfile.TemporaryDirectory() as tmp, OpCounter() as counter:
            run_population([Member(c, Path(tmp) / f"p{i}") for i, c in enumerate(longer)], args.engine)
        counts.append(counter.ops)
    per_epoch_steps = -(-args.images // 2 // args.batch)
    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"members": members, "ops_per_step": round((counts[1] - counts[0]) / per_epoch_steps),
            "population_s": statistics.median(population), "one_by_one_s": statistics.median(one_by_one),
            "member_step_ms": 1000 * statistics.median(population) / steps,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_cuda_mib": peak_cuda}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--method", default="darts")
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--images", type=int, default=1024, help="synthetic training images (half search, half val)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", default="turns", choices=["turns", "stacked"])
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one S in this process
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args, args.one)))
        return
    print(f"# {' '.join(overrides(args))}; engine {args.engine}; median of {args.repeats}")
    base = None
    for members in args.members:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", str(members)]
        row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        base = base or row
        print(f"members={members} ops_per_step={row['ops_per_step']} ({row['ops_per_step'] / base['ops_per_step']:.2f}x "
              f"of S={base['members']})  population {row['population_s']:.2f} s, one by one {row['one_by_one_s']:.2f} s "
              f"(ratio {row['population_s'] / row['one_by_one_s']:.2f}); {row['member_step_ms']:.1f} ms per member-step; "
              f"peak_rss_mib={row['peak_rss_mib']:.0f}"
              + (f" peak_cuda_mib={row['peak_cuda_mib']:.0f}" if row["peak_cuda_mib"] is not None else ""), flush=True)


if __name__ == "__main__":
    main()
