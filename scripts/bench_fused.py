"""Fused against plain mixed edges: search-step time, interleaved in one process, and ATen ops per step.

    python scripts/bench_fused.py                          # CPU, 1 thread, C=8, 5 cells, batch 32, 16x16x3
    python scripts/bench_fused.py --repeats 5 --estimators first_order amended
    python scripts/bench_fused.py --C 16 --layers 8 --batch 64 --size 32 --repeats 3   # the papers' size
    python scripts/bench_fused.py --generic-layout         # the fused path other devices take, on the CPU
    python scripts/bench_fused.py --per-edge               # fused edges one by one, not batched per state

Both supernets are built from the same seed (the same weights) and stepped in turn, plain then fused, round
after round, so a busy machine slows both alike; per estimator it prints the median step time of each, the
ratio of the medians and the median of the per-round ratios, then the ATen operators dispatched during one
step of each (``scripts/bench.py --ops`` counts the same way). ``--generic-layout`` switches off the CPU
layouts of the fused path (channels-last, dilated convs on parity phases): the op count is then that of
the path a GPU runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ESTIMATORS, make_step, ops_per_step, run_step  # noqa: E402


def timed(phases, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run_step(phases)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def time_both(name: str, args: argparse.Namespace, device: torch.device) -> None:
    """Plain and fused steps of one estimator in turn, round after round; prints the medians and their ratio."""
    runs = {fused: make_step(name, args, fused) for fused in (False, True)}
    for _ in range(args.warmup):
        for phases in runs.values():
            timed(phases, device)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for fused, phases in runs.items():
            times[fused].append(timed(phases, device))
    plain, fused = statistics.median(times[False]), statistics.median(times[True])
    rounds = [f / q for q, f in zip(times[False], times[True])]
    print(f"estimator={name} plain {plain * 1000:.1f} ms  fused {fused * 1000:.1f} ms  fused/plain {fused / plain:.3f}"
          f"  (per round: median {statistics.median(rounds):.3f}, {min(rounds):.3f}..{max(rounds):.3f})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--estimators", nargs="+", default=["first_order"], choices=ESTIMATORS)
    p.add_argument("--eta", type=float, default=0.1)
    p.add_argument("--hvp", default="finite_difference", choices=["finite_difference", "exact"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (one plain and one fused step each)")
    p.add_argument("--no-ops", action="store_true", help="skip counting the operators")
    p.add_argument("--no-timing", action="store_true", help="only count the operators")
    p.add_argument("--generic-layout", action="store_true",
                   help="the fused path without its CPU layouts (what other devices run)")
    p.add_argument("--per-edge", action="store_true",
                   help="fused edges one by one with the plain parameters, not batched per source state")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.generic_layout:
        import nasrun.supernet.fused as fused_module

        fused_module._cpu_layout = lambda x: False
    device = torch.device(args.device)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {args.threads} threads"
    parts = [f"search step, supernet C={args.C}, {args.layers} cells, {args.nodes} nodes, 8 ops",
             f"batch {args.batch} of {args.channels}x{args.size}x{args.size}", where, f"torch {torch.__version__}"]
    if not args.no_timing:
        parts.append(f"{args.repeats} interleaved rounds after {args.warmup}")
    if args.generic_layout:
        parts.append("fused path without CPU layouts")
    if args.per_edge:
        parts.append("fused edges one by one")
    print("; ".join(parts), flush=True)
    for name in args.estimators:
        if not args.no_timing:
            time_both(name, args, device)
        if not args.no_ops:
            for f in (False, True):
                n = ops_per_step(name, args, f)
                print(f"estimator={name} fused={str(f).lower()} ops_per_step={n['total']} (arch_step={n['arch_step']} "
                      f"weight_grads={n['weight_grads']} weight_update={n['weight_update']})", flush=True)


if __name__ == "__main__":
    main()
