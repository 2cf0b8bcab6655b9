"""Search-step throughput on a GPU: eager, fused, compiled and CUDA-graph supernets, fp32 and bf16, two batch sizes.

    python scripts/bench_gpu.py                                   # CUDA: C=16, 8 cells, 32 px, batch 64 and 256
    python scripts/bench_gpu.py --modes eager graph --precisions bf16 --batches 256 --budget-s 480
    python scripts/bench_gpu.py --device cpu --quick              # a smoke run of every setting at a tiny size

One step is one call of ``nasrun.search.loop.train_epoch`` on streams of one batch per pass, as
``scripts/bench_spaces.py`` does: the search loop's own architecture step (the preset's estimator,
Adam) and weight step (SGD, clipping), on a :class:`nasrun.search.state.SearchState` composed from
``method=darts`` (first order) or ``method=amended`` with ``supernet.C``, ``supernet.layers``,
``search.batch_size``, ``supernet.fused``, ``search.compile`` and ``precision`` set per setting. The
batches are fixed random tensors already on the device (what ``dataset.loader=device`` hands over),
so loading is not timed.

A mode is ``eager`` (the plain supernet, supernet.fused=false), ``fused`` (supernet.fused=true),
``compile`` (the plain supernet with search.compile=compile), ``graph`` (search.compile=graph: CUDA graphs
through torch.compile's reduce-overhead mode), or ``fused+compile`` / ``fused+graph``. Per setting, after
``--warmup`` steps (the first pays any compilation, printed as ``first_s``), the median of ``--repeats``
synchronised steps; one line each::

    estimator=first_order batch=64 mode=graph precision=bf16 step_ms=... images_per_s=... first_s=...
        search_50ep_h=... used=graph cudagraph_skips=0 peak_gib=...

``images_per_s`` counts training plus validation images (2 x batch per step). ``search_50ep_h`` is the
implied 50-epoch CIFAR-10 search: ceil(25000 / batch) steps per epoch x 50 epochs x the median step,
without the per-epoch evaluation. ``used`` is the compile mode the search state actually ran (a
fallback shows here); with ``graph``, ``cudagraph_skips`` counts graphs that inductor ran without a CUDA
graph (e.g. for a mutated input), which makes ``graph`` no more than ``compile``. Settings run in one
process in turn; one that fails (e.g. out of memory) prints its error and the rest go on.
``--budget-s`` stops starting new settings after that many seconds.

Then the population rows (``--population``, default 1 and 8 members; none with ``--population`` alone), for each
engine of ``--engines`` (default turns and stacked): ``scripts/bench_population.py``'s measurement on this device
at the first batch size, epochs of 8 steps per member on synthetic images, as ``population engine=E
members=S ops_per_step=N ops_step=... ops_epoch=... step_ms=... one_by_one_step_ms=... population_s=...
one_by_one_s=...`` (``step_ms``: one population step in steady state; ``ops_per_step`` spreads each epoch's
fixed operators over a CIFAR-10 epoch of 391 steps).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_spaces import RandomStream  # noqa: E402

from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError  # noqa: E402
from nasrun.methods import ArchObjective, make_estimator, make_perturbation, make_schedule  # noqa: E402
from nasrun.search.loop import train_epoch  # noqa: E402
from nasrun.search.state import SearchState  # noqa: E402

PRESETS = {"first_order": "darts", "amended": "amended"}
MODES = ("eager", "fused", "compile", "graph", "fused+compile", "fused+graph")
#: CIFAR-10's search-train half, and the epochs of the DARTS search.
SEARCH_TRAIN, EPOCHS = 25_000, 50
#: --quick: a tiny supernet (the test suite's) so that every setting, compilations included, runs on a CPU.
QUICK = {"C": 2, "layers": 3, "nodes": 2, "size": 8, "batches": [8], "warmup": 1, "repeats": 1,
         "ops": "[none,max_pool_3x3,skip_connect,sep_conv_3x3]"}


def overrides(estimator: str, batch: int, mode: str, precision: str, args: argparse.Namespace) -> list[str]:
    """The search config of one setting."""
    parts = mode.split("+")
    fused = "fused" in parts
    compile_mode = next((m for m in parts if m in ("compile", "graph")), "off")
    out = [f"method={PRESETS[estimator]}", f"supernet.C={args.C}", f"supernet.layers={args.layers}",
           f"search.batch_size={batch}", "search.arch_warmup_epochs=0", f"supernet.fused={str(fused).lower()}",
           f"search.compile={compile_mode}", "progress=false", f"precision={precision}"]
    if args.quick:
        out += [f"space.nodes={args.nodes}", f"space.ops={QUICK['ops']}"]
    return out


def build(over: list[str], batch: int, args: argparse.Namespace, device: torch.device):
    """The search state and first epoch plan of one setting, and the autocast the config could not express."""
    autocast = nullcontext()
    try:
        cfg = to_typed(compose("search", over))
    except ConfigError:  # a checkout without the precision key: autocast by hand
        precision = over[-1].split("=")[1]
        cfg = to_typed(compose("search", over[:-1]))
        if precision == "bf16":
            autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    torch.manual_seed(0)

    def batches(n: int) -> list:
        shape = (batch, 3, args.size, args.size)
        return [(torch.randn(shape, device=device), torch.randint(0, 10, (batch,), device=device)) for _ in range(n)]

    schedule = make_schedule(cfg.schedule, cfg.supernet.layers, list(cfg.supernet.skip_dropout), cfg.search.epochs,
                             cfg.search.arch_warmup_epochs)
    objective = ArchObjective()
    state = SearchState(cfg, 10, 3, device, schedule, make_estimator(cfg.estimator, objective),
                        make_perturbation(cfg.perturbation, objective), RandomStream(batches(2)),
                        RandomStream(batches(2)))
    return state, schedule.plan(0), autocast


def timed_steps(state: SearchState, plan, autocast, args: argparse.Namespace, device: torch.device) -> list[float]:
    """Seconds of every step, warm-up steps included (the first pays the compilation)."""
    times = []
    for _ in range(args.warmup + args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with autocast:
            train_epoch(state, plan, state.cfg.search.lr)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def run_setting(estimator: str, batch: int, mode: str, precision: str, args: argparse.Namespace,
                device: torch.device) -> str:
    """One line of figures for one setting."""
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    skips = cudagraph_skips()
    state, plan, autocast = build(overrides(estimator, batch, mode, precision, args), batch, args, device)
    times = timed_steps(state, plan, autocast, args, device)
    skipped = f" cudagraph_skips={cudagraph_skips() - skips}" if state.capture.used == "graph" else ""
    step = statistics.median(times[args.warmup:])
    hours = math.ceil(SEARCH_TRAIN / batch) * EPOCHS * step / 3600
    peak = f" peak_gib={torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if device.type == "cuda" else ""
    return (f"step_ms={step * 1000:.1f} images_per_s={2 * batch / step:.0f} first_s={times[0]:.1f} "
            f"search_50ep_h={hours:.2f} used={state.capture.used}{skipped}{peak}")


def cudagraph_skips() -> int:
    """Graphs inductor compiled but would not capture as CUDA graphs (they then run as plain compiled code)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"].get("cudagraph_skips", 0))


def release(device: torch.device) -> None:
    """Free what the last setting held (compiled graphs, CUDA graph pools, cached blocks)."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny supernet, batch 8, one timed step: a smoke run")
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--estimators", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--modes", nargs="+", default=["eager", "fused", "compile", "graph"], choices=MODES)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first compiles)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps (the median is reported)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--cudnn-benchmark", type=int, default=1, choices=[0, 1],
                   help="torch.backends.cudnn.benchmark for every setting, eager included")
    p.add_argument("--budget-s", type=float, default=None, help="start no setting after this many seconds")
    p.add_argument("--population", type=int, nargs="*", default=[1, 8],
                   help="members of the population rows (scripts/bench_population.py); none: no rows")
    p.add_argument("--engines", nargs="+", default=["turns", "stacked"], choices=["turns", "stacked"],
                   help="population engines of those rows")
    args = p.parse_args(argv)
    if args.quick:
        args.nodes = QUICK["nodes"]
        for key in ("C", "layers", "size", "batches", "warmup", "repeats"):
            setattr(args, key, QUICK[key])
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"
    print(f"search step (nasrun.search.loop.train_epoch), C={args.C}, {args.layers} cells, {args.size}x{args.size}x3; "
          f"{where}; torch {torch.__version__}; cudnn.benchmark={bool(args.cudnn_benchmark)}; median of "
          f"{args.repeats} steps after {args.warmup}; load average {load}", flush=True)
    started, failed = time.time(), 0
    for estimator in args.estimators:
        for batch in args.batches:
            for precision in args.precisions:
                for mode in args.modes:
                    name = f"estimator={estimator} batch={batch} mode={mode} precision={precision}"
                    if args.budget_s is not None and time.time() - started > args.budget_s:
                        print(f"{name} skipped: --budget-s {args.budget_s:.0f} spent", flush=True)
                        continue
                    try:
                        print(f"{name} {run_setting(estimator, batch, mode, precision, args, device)}", flush=True)
                    except Exception as exc:  # noqa: BLE001 - e.g. out of memory at batch 256: go on
                        failed += 1
                        print(f"{name} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", flush=True)
                    release(device)
    for engine, members in [(e, m) for e in args.engines for m in args.population]:
        name = f"population engine={engine} members={members}"
        if args.budget_s is not None and time.time() - started > args.budget_s:
            print(f"{name} skipped: --budget-s {args.budget_s:.0f} spent", flush=True)
            continue
        try:
            print(population_row(engine, members, args), flush=True)
        except Exception as exc:  # noqa: BLE001 - report and go on
            failed += 1
            print(f"{name} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", flush=True)
        release(device)
    return 1 if failed else 0


def population_row(engine: str, members: int, args: argparse.Namespace) -> str:
    """One line of scripts/bench_population.py's figures for ``members`` under ``engine`` on this device."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_population import CIFAR10_EPOCH_STEPS, one_size

    batch = args.batches[0]
    row = one_size(argparse.Namespace(C=args.C, layers=args.layers, batch=batch, size=args.size, images=16 * batch,
                                      epochs=1, repeats=1 if args.quick else 3, threads=args.threads or 1,
                                      device=args.device, method="darts", engine=engine,
                                      epoch_steps=CIFAR10_EPOCH_STEPS), members)
    return (f"population engine={engine} members={members} batch={batch} ops_per_step={row['ops_per_step']} "
            f"ops_step={row['ops_step']} ops_epoch={row['ops_epoch']} step_ms={row['step_ms']:.1f} "
            f"one_by_one_step_ms={row['one_by_one_step_ms']:.1f} population_s={row['population_s']:.2f} "
            f"one_by_one_s={row['one_by_one_s']:.2f} peak_cuda_mib={row['peak_cuda_mib']}")


if __name__ == "__main__":
    sys.exit(main())
