"""Grouped-conv member stacking: operators, time and memory of one weight step for S population members.

    python scripts/bench_stacked.py                       # S = 1 2 4 8, single thread
    python scripts/bench_stacked.py --members 4 --profile # plus the top ops of the stacked step

One weight-step gradient (train mode, forward and backward of the sum of the members' mean
cross-entropies, mixing weights detached as in the search's weight step) for S members, each with its
own batch, three ways: (a) ``StackedSuperNet`` (one network, one group per member), (b) the S plain
supernets one after another, (c) the S ``fused=true`` supernets one after another. Per S it prints
the ATen operators dispatched per step, the median time of each way, the largest gradient difference
between (a) and (b), and the process's peak RSS so far.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

# this checkout's nasrun, not an installed copy; and the benchmarks' shared operator counter
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import OpCounter  # noqa: E402


def build_members(S: int, args: argparse.Namespace, fused: bool, dtype: torch.dtype, device: torch.device) -> list:
    """S supernets of the search config, member m seeded with m (as a population draws them)."""
    from nasrun.config.compose import compose, to_typed
    from nasrun.search.state import build_supernet

    cfg = to_typed(compose("search", [f"supernet.C={args.C}", f"supernet.layers={args.layers}", "dataset=digits",
                                      f"supernet.fused={str(fused).lower()}"]))
    out = []
    for m in range(S):
        torch.manual_seed(m)
        out.append(build_supernet(cfg, 10, 3, args.layers).to(device, dtype).train())
    return out


def one_by_one_step(models: list, x: torch.Tensor, y: torch.Tensor) -> None:
    """Today's population: each member's own forward and backward, in turn."""
    for m, model in enumerate(models):
        model.zero_grad(set_to_none=True)
        mix = {k: w.detach() for k, w in model.softmax_weights().items()}
        F.cross_entropy(model(x[m], mix), y[m]).backward()


def stacked_step(model, x: torch.Tensor, y: torch.Tensor) -> None:
    """All members in one forward and backward; ``x`` is already ``(N, S*3, H, W)``, ``y`` ``(N, S)``."""
    from nasrun.supernet.stacked import member_loss_sum

    model.zero_grad(set_to_none=True)
    mix = {k: w.detach() for k, w in model.softmax_weights().items()}
    member_loss_sum(model(x, mix), y).backward()


def timed(fn: Callable[[], None], repeats: int) -> float:
    """Median wall time in ms after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def count_ops(fn: Callable[[], None]) -> int:
    with OpCounter() as c:
        fn()
    return c.ops


def grad_diff(stacked, models: list) -> tuple[float, float]:
    """Largest |stacked gradient - member's own gradient| over every member and weight, absolute and
    relative to the largest |gradient| of that tensor (float32 rounding shows up as the latter)."""
    grads = {n: p.grad for n, p in stacked.named_parameters()}
    worst, worst_rel = 0.0, 0.0
    for m, model in enumerate(models):
        for n, p in model.named_parameters():
            if p.grad is not None:
                diff = float((stacked.member_tensor(n, grads[n], m) - p.grad).abs().max())
                worst = max(worst, diff)
                worst_rel = max(worst_rel, diff / max(float(p.grad.abs().max()), 1e-30))
    return worst, worst_rel


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def profile_top(fn: Callable[[], None], rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run_one(S: int, args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> None:
    """Measure the three ways for S members and print one summary line (plus a sanity line)."""
    from nasrun.supernet.stacked import StackedSuperNet, stack_inputs

    plain = build_members(S, args, False, dtype, device)
    stacked = StackedSuperNet(plain)
    if args.channels_last:
        stacked = stacked.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(S, args.batch, 3, args.size, args.size, dtype=dtype, generator=g).to(device)
    y = torch.randint(10, (S, args.batch), generator=g).to(device)
    xs, ys = stack_inputs(x), y.T.contiguous()
    if args.channels_last:
        xs = xs.contiguous(memory_format=torch.channels_last)
    # sanity first, on the untouched copies (both sides see the same weights and BN state)
    stacked_step(stacked, xs, ys)
    one_by_one_step(plain, x, y)
    diff = grad_diff(stacked, plain)
    ways = {"stacked": lambda: stacked_step(stacked, xs, ys), "one_by_one": lambda: one_by_one_step(plain, x, y)}
    if not args.no_fused:
        fused = build_members(S, args, True, dtype, device)
        ways["fused_one_by_one"] = lambda: one_by_one_step(fused, x, y)
    ops = {name: count_ops(fn) for name, fn in ways.items()}
    ms = {name: timed(fn, args.repeats) for name, fn in ways.items()}
    print(f"members={S} ops_per_step={ops['stacked']} "
          + " ".join(f"{name}_ops={n}" for name, n in ops.items() if name != "stacked") + " "
          + " ".join(f"{name}_ms={t:.1f}" for name, t in ms.items())
          + f" peak_rss_mib={peak_rss_mib():.0f}", flush=True)
    print(f"members={S} max_grad_diff_stacked_vs_one_by_one={diff[0]:.2e} relative={diff[1]:.2e}", flush=True)
    if S in args.profile:
        print(f"members={S} stacked step, top {args.profile_rows} ops by self CPU time:")
        print(profile_top(ways["stacked"], args.profile_rows), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch", type=int, default=32, help="images per member")
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-fused", action="store_true", help="skip (c), the fused supernets one by one")
    p.add_argument("--channels-last", action="store_true", help="run the stacked network channels-last")
    p.add_argument("--profile", type=int, nargs="*", default=[], help="S values to profile the stacked step at")
    p.add_argument("--profile-rows", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    print(f"C={args.C}, {args.layers} cells, batch {args.batch} per member, {args.size}px, {args.dtype}, {device}, "
          f"{args.threads} thread(s), median of {args.repeats} after 1 warm-up, torch {torch.__version__}", flush=True)
    for S in args.members:
        run_one(S, args, dtype, device)


if __name__ == "__main__":
    main()
