"""Population search against its members run one after another: time, operators per step and memory.

    python scripts/bench_population.py                                # CPU, 1 thread, C=8, 5 cells, batch 32, 16 px
    python scripts/bench_population.py --C 16 --layers 8 --batch 64 --size 32   # the papers' size
    python scripts/bench_population.py --device cuda --members 1 2 4 8
    python scripts/bench_population.py --engine stacked               # the members stacked in one network

For each S in --members, a fresh process searches S seeds of one config on synthetic images in two
ways, in turn for --repeats rounds: as a population (``nasrun.run.population``) and as S solo searches
one after another in the same process (what Hydra's basic launcher does with a sweep). It prints per S

    members=S ops_per_step=N   ATen operators per population step in steady state: all members' work, with
                               their share of each epoch's fixed work (checkpoints, genotypes, metrics) over an
                               epoch of --epoch-steps steps; beside it the two parts, per step (evaluation
                               included) and per epoch, from populations one epoch longer and shorter at two
                               epoch lengths
    step ... ms                median wall time of one population step in steady state (the difference between
                               searches one epoch longer and shorter, per step of an epoch; evaluation included),
                               per member-step, and per member-step of the solo searches one after another
    whole search               median wall time of the whole population and of the solo searches, set-up included
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


#: Steps of a CIFAR-10 search epoch at batch 64 (25,000 search images): what ops_per_step spreads an epoch over.
CIFAR10_EPOCH_STEPS = 391


def member_configs(args: argparse.Namespace, members: int, *extra: str) -> list:
    """The typed search configs of seeds 0..members-1 under the benchmark's overrides and ``extra``."""
    from nasrun.config.compose import compose, to_typed

    return [to_typed(compose("search", [*overrides(args), *extra, f"seed={s}"])) for s in range(members)]


def one_size(args: argparse.Namespace, members: int) -> dict:
    """In this process: the population and the one-by-one searches of ``members`` seeds, timed in turn, each at
    --epochs and at one epoch more (the difference is one epoch in steady state, set-up left out)."""
    import resource

    import torch

    from nasrun.run.population import Member, run_population
    from nasrun.search.loop import run_search

    def as_population(tmp: Path, cfgs: list) -> None:
        run_population([Member(c, tmp / f"p{i}") for i, c in enumerate(cfgs)], args.engine)

    def one_after_another(tmp: Path, cfgs: list) -> None:
        for i, c in enumerate(cfgs):
            run_search(c, tmp / f"s{i}")

    sized = {extra: member_configs(args, members, f"search.epochs={args.epochs + extra}") for extra in (0, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        run_search(sized[0][0], Path(tmp) / "warm-up")  # first-call costs (imports, allocator) out of the timings
    times: dict = {(way, extra): [] for way in (as_population, one_after_another) for extra in (0, 1)}
    for round_ in range(args.repeats):  # in turn, the first one alternating, so a busy machine slows both alike
        for way, extra in (list(times) if round_ % 2 == 0 else list(times)[::-1]):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                way(Path(tmp), sized[extra])
                times[way, extra].append(time.perf_counter() - t0)
    steps = -(-args.images // 2 // args.batch)  # steps per epoch of each member

    def step_ms(way) -> float:  # one epoch's time (the median of the rounds' differences) per step
        return 1000 * statistics.median(b - a for a, b in zip(times[way, 0], times[way, 1])) / steps

    per_step, per_epoch = _op_counts(args, members)
    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"members": members, "ops_step": round(per_step), "ops_epoch": round(per_epoch),
            "ops_per_step": round(per_step + per_epoch / args.epoch_steps),
            "population_s": statistics.median(times[as_population, 0]),
            "one_by_one_s": statistics.median(times[one_after_another, 0]),
            "step_ms": step_ms(as_population), "one_by_one_step_ms": step_ms(one_after_another),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_cuda_mib": peak_cuda}


def _op_counts(args: argparse.Namespace, members: int) -> tuple[float, float]:
    """ATen operators of one population epoch in steady state, split as ``per_step * steps + per_epoch``:
    populations one epoch longer and shorter give an epoch's operators, at two epoch lengths (2 and 4 steps)
    the line through them (the evaluation of the search-val images is per step, as they grow with the epoch)."""
    from nasrun.run.population import Member, run_population

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import OpCounter

    epoch_ops = {}
    for steps in (2, 4):
        counts = []
        for epochs in (1, 2):
            configs = member_configs(args, members, f"dataset.num_train={2 * steps * args.batch}",
                                     f"search.epochs={epochs}")
            with tempfile.TemporaryDirectory() as tmp, OpCounter() as counter:
                run_population([Member(c, Path(tmp) / f"p{i}") for i, c in enumerate(configs)], args.engine)
            counts.append(counter.ops)
        epoch_ops[steps] = counts[1] - counts[0]
    per_step = (epoch_ops[4] - epoch_ops[2]) / 2
    return per_step, epoch_ops[2] - 2 * per_step


def format_row(row: dict, base: dict) -> str:
    """One S's line, each figure beside its ratio to the first S's (``base``)."""
    S, first = row["members"], base["members"]

    def ratio(key: str) -> str:
        return f"{row[key] / base[key]:.2f}x"

    peak_cuda = f" peak_cuda_mib={row['peak_cuda_mib']:.0f}" if row["peak_cuda_mib"] is not None else ""
    return (f"members={S} ops_per_step={row['ops_per_step']} ({ratio('ops_per_step')} of S={first}; "
            f"{row['ops_step']} per step {ratio('ops_step')}, {row['ops_epoch']} per epoch {ratio('ops_epoch')})  "
            f"step {row['step_ms']:.0f} ms ({ratio('step_ms')} of S={first}; {row['step_ms'] / S:.0f} ms per "
            f"member-step, one by one {row['one_by_one_step_ms'] / S:.0f}); whole search {row['population_s']:.1f} s, "
            f"one by one {row['one_by_one_s']:.1f} s; peak_rss_mib={row['peak_rss_mib']:.0f}{peak_cuda}")


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
    p.add_argument("--epoch-steps", type=int, default=CIFAR10_EPOCH_STEPS,
                   help=f"the epoch length ops_per_step spreads each epoch's fixed operators over "
                        f"({CIFAR10_EPOCH_STEPS}: a CIFAR-10 search at batch 64)")
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
        print(format_row(row, base), flush=True)


if __name__ == "__main__":
    main()
