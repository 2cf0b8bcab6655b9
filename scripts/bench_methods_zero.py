"""Per-step cost of NASP and ZARTS (MGS, RS, GLD) against first-order DARTS, through the real search loop.

    python scripts/bench_methods_zero.py --threads 1              # CPU-sized default: C=4, 5 cells, batch 16 of 3x8x8
    python scripts/bench_methods_zero.py --C 16 --layers 8 --batch 64 --size 32 --inner-batch 48 --device cuda

Each measurement runs ``nasrun.search._train_epoch`` (the one loop every method composes) for
``--every`` steps on random data, so a ZARTS figure includes exactly one architecture update and its
amortised cost is spread over the steps between updates, as in a search. The methods take turns
window by window, so a change in the machine's load affects them alike. Printed per method: the
median over ``--repeats`` windows (after one untimed window) of the time per step, and images/s
counted as the training plus validation images of a step (2 x batch; the fine-tuning images ZARTS
draws in addition are work, not counted images). The alphas' warm-up is off, so every window has
architecture steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from nasrun.config import DARTS_PRIMITIVES, MethodConf
from nasrun.methods import make_estimator, make_perturbation
from nasrun.search import _init_alphas, _train_epoch
from nasrun.supernet import SuperNet


class RandomStream:
    """Stands in for a BatchStream: cycles through a few fixed random batches."""

    def __init__(self, batches: list, steps: int) -> None:
        self.batches, self.i, self.batches_per_pass = batches, 0, steps

    def __iter__(self):
        return self

    def __next__(self):
        self.i += 1
        return self.batches[self.i % len(self.batches)]


METHODS = {
    "darts": dict(estimator="first_order"),
    "nasp": dict(estimator="proximal", perturbation="discrete", alpha_map="argmax", alpha_init=0.5),
    "zarts_mgs": dict(estimator="mgs"),
    "zarts_rs": dict(estimator="rs"),
    "zarts_gld": dict(estimator="gld"),
}


def setup(name: str, args: argparse.Namespace):
    """A supernet, its optimisers, the method's estimator and perturbation, and two random streams."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    method = MethodConf(name=name, update_every=args.every, inner_steps=args.inner_steps, samples=args.samples,
                        inner_batch_size=args.inner_batch, **METHODS[name])
    net = SuperNet(args.C, 10, args.layers, DARTS_PRIMITIVES, nodes=args.nodes, in_channels=args.channels).to(device)
    _init_alphas(net, method.alpha_init, method.alpha_map)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)

    def batches(n: int) -> list:
        shape = (args.batch, args.channels, args.size, args.size)
        return [(torch.randn(shape, device=device), torch.randint(0, 10, (args.batch,), device=device))
                for _ in range(n)]

    train, val = RandomStream(batches(4), args.every), RandomStream(batches(4), args.every)
    return net, make_estimator(method), make_perturbation(method), train, val, w_opt, a_opt


def window(run, args: argparse.Namespace) -> float:
    """Seconds per step over one window of ``args.every`` loop steps."""
    net, estimator, perturbation, train, val, w_opt, a_opt = run
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _train_epoch(net, estimator, perturbation, train, val, w_opt, a_opt, 0.025, True, 5.0, False, 0, 50)
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
