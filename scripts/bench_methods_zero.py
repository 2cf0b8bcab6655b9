"""Per-step cost of NASP and ZARTS (MGS, RS, GLD) against first-order DARTS, through the real search loop.

    python scripts/bench_methods_zero.py --threads 1              # CPU-sized default: C=4, 5 cells, batch 16 of 3x8x8
    python scripts/bench_methods_zero.py --C 16 --layers 8 --batch 64 --size 32 --inner-batch 48 --device cuda

Each measurement runs ``nasrun.search.loop.train_epoch`` (the one loop every method composes, on a
``nasrun.search.state.SearchState`` built from the method's preset) for ``--every`` steps on random
data, so a ZARTS figure includes exactly one architecture update and its amortised cost is spread
over the steps between updates, as in a search. The methods take turns window by window, so a
change in the machine's load affects them alike. Printed per method: the median over ``--repeats``
windows (after one untimed window) of the time per step, and images/s counted as the training plus
validation images of a step (2 x batch; the fine-tuning images ZARTS draws in addition are work, not
counted images). The alphas' warm-up is off, so every window has architecture steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from nasrun.config.compose import compose, to_typed
from nasrun.methods import ArchObjective, make_estimator, make_perturbation, make_schedule
from nasrun.search.loop import train_epoch
from nasrun.search.state import SearchState


class RandomStream:
    """Stands in for a BatchStream: cycles through a few fixed random batches."""

    def __init__(self, batches: list, steps: int) -> None:
        self.batches, self.i, self.batches_per_pass = batches, 0, steps

    def __iter__(self):
        return self

    def __next__(self):
        self.i += 1
        return self.batches[self.i % len(self.batches)]

    def state_dict(self) -> dict:
        return {"i": self.i}


#: Per method, the overrides that pick its axis options (the ZARTS rules: estimator=mgs, rs, gld).
METHODS = {
    "darts": ["method=darts"],
    "nasp": ["method=nasp"],  # proximal estimator, discrete perturbation, argmax alpha map (alphas start at 0.5)
    "zarts_mgs": ["method=zarts", "estimator=mgs"],
    "zarts_rs": ["method=zarts", "estimator=rs"],
    "zarts_gld": ["method=zarts", "estimator=gld"],
}
ZERO_ORDER = ("zarts_mgs", "zarts_rs", "zarts_gld")


def setup(name: str, args: argparse.Namespace):
    """The method's search state (supernet, optimisers, estimator, perturbation, two random streams) and epoch plan."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    overrides = [*METHODS[name], "space=darts", f"space.nodes={args.nodes}", f"supernet.C={args.C}",
                 f"supernet.layers={args.layers}", f"search.batch_size={args.batch}", "search.epochs=50",
                 "search.arch_warmup_epochs=0", "progress=false"]
    if name in ZERO_ORDER:
        overrides += [f"estimator.update_every={args.every}", f"estimator.inner_steps={args.inner_steps}",
                      f"estimator.samples={args.samples}", f"estimator.inner_batch_size={args.inner_batch}"]
    cfg = to_typed(compose("search", overrides))

    def batches(n: int) -> list:
        shape = (args.batch, args.channels, args.size, args.size)
        return [(torch.randn(shape, device=device), torch.randint(0, 10, (args.batch,), device=device))
                for _ in range(n)]

    train, val = RandomStream(batches(4), args.every), RandomStream(batches(4), args.every)
    schedule = make_schedule(cfg.schedule, cfg.supernet.layers, list(cfg.supernet.skip_dropout), cfg.search.epochs,
                             cfg.search.arch_warmup_epochs)
    objective = ArchObjective()
    state = SearchState(cfg, 10, args.channels, device, schedule, make_estimator(cfg.estimator, objective),
                        make_perturbation(cfg.perturbation, objective), train, val)
    return state, schedule.plan(0)


def window(run, args: argparse.Namespace) -> float:
    """Seconds per step over one window of ``args.every`` loop steps."""
    state, plan = run
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_epoch(state, plan, 0.025)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / args.every


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--C", type=int, default=4)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--every", type=int, default=10, help="ZARTS update_every; also the window length for all")
    p.add_argument("--inner-steps", type=int, default=10)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--inner-batch", type=int, default=12, help="ZARTS fine-tuning batch (48 of 64 in the paper)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    where = (torch.cuda.get_device_name() if args.device.startswith("cuda")
             else f"cpu, {torch.get_num_threads()} threads")
    print(f"supernet C={args.C}, {args.layers} cells, {args.nodes} nodes, 8 ops; batch {args.batch} of "
          f"{args.channels}x{args.size}x{args.size}; ZARTS M={args.every}, inner steps {args.inner_steps}, "
          f"N={args.samples}, inner batch {args.inner_batch}; {where}; torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    runs = {name: setup(name, args) for name in args.methods}
    times: dict[str, list[float]] = {name: [] for name in args.methods}
    for r in range(args.repeats + 1):  # round robin, so a change in machine load hits every method alike
        for name in args.methods:
            t = window(runs[name], args)
            if r > 0:  # the first window warms up allocators and kernels
                times[name].append(t)
    base = None
    for name in args.methods:
        med = statistics.median(times[name])
        base = med if name == "darts" else base
        rel = f"  {med / base:5.2f}x darts" if base else ""
        print(f"{name:<10} median step {med * 1000:9.1f} ms over {len(times[name])} windows of {args.every} steps  "
              f"{2 * args.batch / med:8.1f} images/s  (min {min(times[name]) * 1000:.1f} ms){rel}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
