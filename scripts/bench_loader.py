"""Images per second of the two input pipelines: dataset.loader=device vs dataset.loader=torch.

    python scripts/bench_loader.py                                   # CPU, CIFAR-shaped synthetic set
    python scripts/bench_loader.py --dataset fashion_mnist           # a real set, via its dataset config
    python scripts/bench_loader.py --device cuda --workers 0 2 8 --batch 64 256 1024

Each configuration builds one training stream as a retraining run would (crop with padding, flip,
normalise, cutout; ``--no-cutout`` for the search pipeline), takes one warm-up batch (which also
starts the workers), then times ``--repeats`` runs of ``--images`` images each and prints the median,
minimum and maximum images/s. The device loader is the same on every ``--workers`` value, so it is
measured once per batch size. The machine (CPU, threads, load average, GPU) is printed first: on a
shared machine, compare figures only from the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from nasrun.config.compose import compose, to_typed
from nasrun.data import load_dataset, make_stream


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"load average {load}{gpu}")


def time_stream(stream, images: int, repeats: int, device: torch.device) -> list[float]:
    steps = max(1, images // stream.batch_size)
    next(stream)  # warm-up: first pass order, worker start-up
    rates = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            x, _ = next(stream)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(steps * stream.batch_size / (time.perf_counter() - t0))
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="synthetic", help="a dataset config name (default: synthetic, CIFAR-shaped)")
    p.add_argument("--override", nargs="*", default=[], help="extra overrides, e.g. dataset.root=/data")
    p.add_argument("--num-train", type=int, default=10000, help="images of the synthetic set")
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--images", type=int, default=4096, help="images per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cutout", type=int, default=16)
    p.add_argument("--no-cutout", dest="cutout", action="store_const", const=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the main process")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    overrides = [f"dataset={args.dataset}", *args.override]
    if args.dataset == "synthetic":
        overrides += ["dataset.image_size=32", "dataset.in_channels=3", "dataset.num_classes=10",
                      f"dataset.num_train={args.num_train}", "dataset.num_test=10", "dataset.train_augment=[crop,flip]"]
    dcfg = to_typed(compose("search", overrides)).dataset
    data = load_dataset(dcfg)
    c, h, w = data.train.image_shape
    print(f"machine: {machine(device)}")
    print(f"data: {dcfg.name}, {len(data.train)} images of {c}x{h}x{w}, augment {list(dcfg.train_augment)}"
          f"{f' + cutout {args.cutout}' if args.cutout else ''}, {args.images} images x {args.repeats} runs")
    print(f"{'loader':<8} {'workers':>7} {'batch':>6} {'median img/s':>13} {'min':>10} {'max':>10}")
    loaders = [("device", 0)] + [("torch", wk) for wk in args.workers]
    if dcfg.loader == "torch":  # file-backed sets have no device loader
        loaders = loaders[1:]
    for batch in args.batch:
        for loader, workers in loaders:
            stream = make_stream(data.train, None, batch, seed=0, mean=data.mean, std=data.std,
                                 augment=dcfg.train_augment, crop_padding=dcfg.crop_padding, cutout=args.cutout,
                                 device=device, loader=loader, workers=workers, pin_memory=True)
            rates = time_stream(stream, args.images, args.repeats, device)
            shown = "-" if loader == "device" else str(workers)
            print(f"{loader:<8} {shown:>7} {batch:>6} {statistics.median(rates):>13,.0f} {min(rates):>10,.0f} "
                  f"{max(rates):>10,.0f}", flush=True)
            del stream
    return 0


if __name__ == "__main__":
    sys.exit(main())
