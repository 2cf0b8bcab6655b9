"""Images per second and peak memory of one search step (architecture step + weight step) of the DARTS supernet.

    python scripts/bench.py                       # CPU, C=16, 8 cells, batch 64, 32x32x3 (paper size)
    python scripts/bench.py --C 4 --layers 5 --batch 32 --size 8 --channels 1
    python scripts/bench.py --device cuda --repeats 20
    python scripts/bench.py --fused                  # the fused mixed edges (supernet.fused)
    python scripts/bench.py --ops --estimators first_order   # ATen ops per step, unfused and fused
    python scripts/bench.py --ops --per-edge         # the same, fused one edge at a time (no edge groups)
    python scripts/bench.py --compile compile        # the supernet's forward compiled (search.compile)

Prints, per estimator, the median step time over --repeats timed steps (after --warmup steps),
images/s counted as training plus validation images per step, and peak memory. Each estimator runs
in a fresh process, so peak memory is its own: torch.cuda.max_memory_allocated on a GPU, the
process's peak resident set size (which includes the Python and torch runtime) on a CPU. With
``--compile`` the first step, which pays the compilation, is printed on its own.

``--ops`` times nothing: per estimator it counts the ATen operators dispatched during one search step
(architecture step + weight step, after one warm-up step), forward, backward and optimisers included,
with a ``TorchDispatchMode`` (below autograd: composite ops count as what they decompose into), once
for the plain and once for the fused supernet, one line each:
``estimator=first_order fused=false ops_per_step=12345 (arch_step=... weight_grads=... weight_update=...)``,
the phases being the estimator with Adam, the forward and backward of the weight step, and clipping with SGD
(per-parameter ops, the same for both: the fused edges keep every parameter).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from nasrun.search.capture import MODES, Capture
from nasrun.config.schema import DARTS_PRIMITIVES
from nasrun.methods import ArchBatch, apply_arch_step, make_estimator
from nasrun.config.options import AXES, option_keys
from nasrun.supernet import SuperNet

#: The gradient estimators this script times (ZARTS' zero-order rules: scripts/bench_methods_zero.py).
ESTIMATORS = ["first_order", "second_order", "amended"]


def estimator_conf(name: str, args: argparse.Namespace):
    """The estimator's option (nasrun.config.options) with --eta and --hvp where it has those keys."""
    schema = AXES["estimator"][name]
    given = {"eta": args.eta, "hvp": args.hvp}
    return schema(**{k: v for k, v in given.items() if k in option_keys(schema)})


class OpCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched while active (``ops``: total; ``by_name``: per overload)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_name: collections.Counter = collections.Counter()

    @property
    def ops(self) -> int:
        return sum(self.by_name.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.by_name[str(func)] += 1
        return func(*args, **(kwargs or {}))


def make_step(estimator_name: str, args: argparse.Namespace, fused: bool):
    """One search step of a fresh seeded supernet, as its phases: the architecture step (estimator and Adam),
    the weight gradients (forward and backward) and the weight update (clipping and SGD)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = SuperNet(args.C, 10, args.layers, DARTS_PRIMITIVES, nodes=args.nodes, in_channels=args.channels,
                   fused=fused, batched=not getattr(args, "per_edge", False)).to(device)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    conf = estimator_conf(estimator_name, args)
    est = make_estimator(conf)
    Capture.plan(getattr(args, "compile", "off"), device, conf).apply(net)
    shape = (args.batch, args.channels, args.size, args.size)
    x, xv = torch.randn(shape, device=device), torch.randn(shape, device=device)
    y, yv = torch.randint(0, 10, (args.batch,), device=device), torch.randint(0, 10, (args.batch,), device=device)

    def arch_step() -> None:
        arch = est(net, ArchBatch(x, y, xv, yv, w_opt, 0.025))
        apply_arch_step(net, arch, a_opt, est)

    def weight_grads() -> None:
        w_opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        for p in net.arch_parameters():
            p.grad = None

    def weight_update() -> None:
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        w_opt.step()

    return {"arch_step": arch_step, "weight_grads": weight_grads, "weight_update": weight_update}


def run_step(phases) -> None:
    for phase in phases.values():
        phase()


def ops_per_step(estimator_name: str, args: argparse.Namespace, fused: bool) -> dict[str, int]:
    """ATen operators of one search step per phase (and ``total``), after a warm-up step (optimiser state exists)."""
    torch.set_num_threads(args.threads)
    phases = make_step(estimator_name, args, fused)
    run_step(phases)
    counts = {}
    for name, phase in phases.items():
        with OpCounter() as counter:
            phase()
        counts[name] = counter.ops
    return {"total": sum(counts.values()), **counts}


def step_time(estimator_name: str, args: argparse.Namespace) -> tuple[list[float], float, float]:
    """Timed steps after the warm-up, peak memory (MiB), and the first step (compilation included)."""
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    phases = make_step(estimator_name, args, args.fused)
    times = []
    for i in range(args.warmup + args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run_step(phases)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i == 0:
            first = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return times, peak, first


def _child(name: str, args: argparse.Namespace, queue) -> None:
    queue.put(step_time(name, args))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--estimators", nargs="+", default=ESTIMATORS, choices=ESTIMATORS)
    p.add_argument("--eta", type=float, default=0.1)
    p.add_argument("--hvp", default="finite_difference", choices=["finite_difference", "exact"])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fused", action="store_true", help="time the fused mixed edges (supernet.fused)")
    p.add_argument("--per-edge", action="store_true",
                   help="fused edges one by one with the plain parameters, not batched per source state")
    p.add_argument("--compile", default="off", choices=MODES, help="search.compile of the supernet's forward")
    p.add_argument("--ops", action="store_true",
                   help="count the ATen operators of one step, unfused and fused, instead of timing")
    args = p.parse_args()
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, {args.threads} threads"
    print(f"supernet C={args.C}, {args.layers} cells, {args.nodes} nodes, 8 ops; batch {args.batch} of "
          f"{args.channels}x{args.size}x{args.size}; {where}; torch {torch.__version__}"
          + ("" if args.ops else f"; {'fused' if args.fused else 'plain'} mixed edges; compile={args.compile}"))
    if args.ops:
        for name in args.estimators:
            for fused in (False, True):
                n = ops_per_step(name, args, fused)
                print(f"estimator={name} fused={str(fused).lower()} ops_per_step={n['total']} "
                      f"(arch_step={n['arch_step']} weight_grads={n['weight_grads']} "
                      f"weight_update={n['weight_update']})", flush=True)
        return
    ctx = mp.get_context("spawn")
    for name in args.estimators:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, args, queue))
        proc.start()
        times, peak, first = queue.get()
        proc.join()
        med = statistics.median(times)
        kind = "GPU peak allocated" if args.device.startswith("cuda") else "peak RSS"
        print(f"{name:<13} median step {med * 1000:9.1f} ms over {len(times)} steps  "
              f"{2 * args.batch / med:9.1f} images/s  (min {min(times) * 1000:.1f} ms)  {kind} {peak:8.0f} MiB  "
              f"first step {first:.1f} s")


if __name__ == "__main__":
    main()
