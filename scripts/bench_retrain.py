"""Time of one ImageNet retraining step (DARTS_V2 by default), by precision and memory format.

    python scripts/bench_retrain.py                                     # CPU: batch 8, a few steps
    python scripts/bench_retrain.py --device cuda --batch 256 --steps 20  # the mobile-setting GPU figure

Each setting (precision fp32/bf16 x channels_last off/on) builds the network of ``recipe=imagenet``
from the genotype (224 px, 14 cells, C = 48, auxiliary head), moves it to the device as a retraining
does (``nasrun.train.precision.Numerics.prepare``), and times the retraining's own training pass
(``nasrun.train.retrain._train_epoch``: forward under the run's autocast, label-smoothed loss plus the
auxiliary loss, backward, clip, SGD step) over a stream that hands it the same random batch, so the
data pipeline is not in the figure. It prints, per setting, the median and spread of the step time
over ``--repeats`` timed runs of ``--steps`` steps after one warm-up run, images/s, and the peak
device memory (CUDA) or the process's peak resident memory (CPU). The machine and its load come first:
on a shared machine compare figures only from one run.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import sys
import time

import torch

from nasrun.config.compose import compose, to_typed
from nasrun.genotype.genotype import resolve_genotype
from nasrun.train.precision import Numerics
from nasrun.train.retrain import _train_epoch, build_network
from nasrun.run.rng import resolve_device

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_loader import machine  # noqa: E402


class SameBatch:
    """A stream of ``steps`` identical batches per pass (what ``_train_epoch`` reads)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        self.x, self.y, self.batches_per_pass = x, y, steps

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


def measure(args: argparse.Namespace, device: torch.device, precision: str, channels_last: bool) -> str:
    cfg = to_typed(compose("retrain", [f"genotype={args.genotype}", "recipe=imagenet", "dataset=imagenet",
                                       f"precision={precision}", f"channels_last={str(channels_last).lower()}"]))
    numerics = Numerics.of(cfg)
    genotype, _ = resolve_genotype(args.genotype)
    torch.manual_seed(0)
    model = numerics.prepare(build_network(genotype, cfg, cfg.dataset).to(device))
    r = cfg.recipe
    opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
    x = torch.randn(args.batch, 3, cfg.dataset.image_size, cfg.dataset.image_size, device=device)
    y = torch.randint(0, cfg.dataset.num_classes, (args.batch,), device=device)
    stream = SameBatch(x, y, args.steps)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for run in range(args.repeats + 1):  # the first run warms up (cuDNN's choice of kernels, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        _train_epoch(model, stream, opt, r, r.lr, numerics)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if run:
            times.append((time.perf_counter() - t0) / args.steps)
    step = statistics.median(times)
    if device.type == "cuda":
        memory = f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB on the GPU"
    else:
        memory = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process)"
    return (f"precision={precision} channels_last={str(channels_last).lower()} batch={args.batch} "
            f"step_ms={step * 1e3:.1f} (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}) "
            f"images_per_s={args.batch / step:.1f} {memory}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--genotype", default="DARTS_V2", help="a published name or a genotype.json")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 256 on CUDA, 8 on the CPU)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed run (default 20 CUDA, 2 CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", nargs="+", default=["off", "on"], choices=["off", "on"])
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.batch = args.batch or (256 if cuda else 8)
    args.steps = args.steps or (20 if cuda else 2)
    if cuda:
        torch.backends.cudnn.benchmark = True
    print(f"# {machine(device)}")
    print(f"# {args.genotype}, recipe=imagenet (224 px), {args.steps} steps x {args.repeats} runs per setting")
    for precision, layout in itertools.product(args.precision, args.channels_last):
        print(measure(args, device, precision, layout == "on"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
