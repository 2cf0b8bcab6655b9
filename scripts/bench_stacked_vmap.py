"""What stacking a population's members with ``torch.func.vmap`` would give: exactness, operators and time.

    python scripts/bench_stacked_vmap.py --members 1 2 4 8
    python scripts/bench_stacked_vmap.py --members 1 8 --device cuda --dtype float32

One weight-step gradient (forward and backward of the supernet, BatchNorm in train mode, running statistics
updated) for S members, two ways: each member's own supernet in turn (what a population does now), and the
S members' parameters and buffers stacked (``torch.func.stack_module_state``) with one ``vmap`` over
``functional_call`` and ``grad``. It prints, per S, the largest difference between the two (gradients and
BatchNorm running statistics), the ATen operators each way dispatches, and the median time of each.

The mixed op normally skips ops weighted exactly zero, a data-dependent test that ``vmap`` cannot trace;
here every op runs (softmax weights are never zero, so the results are the same).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared operator counter
from bench import OpCounter  # noqa: E402


def members(S: int, args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> list:
    """S plain supernets, member m seeded with m (``bench_stacked.build_members``)."""
    from bench_stacked import build_members

    return build_members(S, args, False, dtype, device)


def one_by_one(models: list, x: torch.Tensor, y: torch.Tensor) -> None:
    for m, model in enumerate(models):
        model.zero_grad()
        mix = {k: F.softmax(model.alphas(k), -1).detach() for k in model.kinds}
        F.cross_entropy(model(x[m], mix), y[m]).backward()


def stacked_step(models: list):
    base = copy.deepcopy(models[0]).to("meta")
    kinds = list(models[0].kinds)

    def loss(params, buffers, x, y):
        mix = {k: F.softmax(params[f"alphas_{k}"], -1).detach() for k in kinds}
        return F.cross_entropy(functional_call(base, (params, buffers), (x, mix)), y)

    return vmap(grad(loss), in_dims=(0, 0, 0, 0), randomness="error")


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from nasrun.supernet.mixed_op import MixedOp

    MixedOp._running = lambda self, weights: self._active  # every op runs (see the module's docstring)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    print(f"C={args.C}, {args.layers} cells, batch {args.batch}, {args.size}px, {args.dtype}, {device}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    for S in args.members:
        models = members(S, args, dtype, device)
        params, buffers = stack_module_state(models)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(S, args.batch, 3, args.size, args.size, dtype=dtype, generator=g).to(device)
        y = torch.randint(10, (S, args.batch), generator=g).to(device)
        step = stacked_step(models)
        grads = step(params, buffers, x, y)
        one_by_one(models, x, y)
        diff = max(float((p.grad - grads[n][m]).detach().abs().max()) for m, model in enumerate(models)
                   for n, p in model.named_parameters() if p.grad is not None)
        diff = max([diff] + [float((b - buffers[n][m]).abs().max()) for m, model in enumerate(models)
                             for n, b in model.named_buffers() if b.is_floating_point()])
        counts = []
        for fn in (lambda: step(params, buffers, x, y), lambda: one_by_one(models, x, y)):
            with OpCounter() as c:
                fn()
            counts.append(c.ops)
        t_stacked = timed(lambda: step(params, buffers, x, y), args.repeats)
        t_solo = timed(lambda: one_by_one(models, x, y), args.repeats)
        print(f"members={S} max_diff={diff:.1e} ops_stacked={counts[0]} ops_one_by_one={counts[1]} "
              f"stacked_s={t_stacked:.3f} one_by_one_s={t_solo:.3f}", flush=True)


if __name__ == "__main__":
    main()
