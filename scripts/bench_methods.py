"""Step time and peak memory of one search step per method preset, beside first-order DARTS.

    python scripts/bench_methods.py                                  # CPU, a small size (see --help)
    python scripts/bench_methods.py --C 16 --layers 8 --batch 64 --size 32   # the papers' CIFAR size
    python scripts/bench_methods.py --device cuda --repeats 10
    python scripts/bench_methods.py --fused                           # the fused mixed edges (supernet.fused)
    python scripts/bench_methods.py --ops --presets darts pcdarts     # ATen ops per step, unfused and fused

One step is what the search loop does after the alpha warm-up: the preset's architecture step
(estimator, then Adam) and its weight step (perturbation, SGD).

- Memory: every preset runs alone in a fresh subprocess, so its memory is its own: on the CPU the
  peak resident set size (``ru_maxrss``) and its growth over the process before the first step
  (what the steps themselves need); on CUDA ``torch.cuda.max_memory_allocated`` (and its growth
  over the memory allocated before the first step).
- Time: one more subprocess builds every preset and steps them in turn, round after round, so a
  busy machine slows all presets alike; the median over the rounds is reported.

P-DARTS is measured at each stage (``pdarts@1..3``: 5/11/17 cells with 8/5/3 ops per edge). Every
preset runs at the same C, batch and image size (the presets' own batch sizes differ: PC-DARTS 256,
P-DARTS 96), so the columns compare like with like; cells are --layers except for P-DARTS, whose
stages set their own depth.

``--ops`` times nothing: per preset it counts the ATen operators dispatched during one search step (after
a warm-up step), unfused and fused, one line each: ``preset=darts fused=true ops_per_step=12345``
(``scripts/bench.py`` says how they are counted).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRESETS = ["darts", "sdarts_rs", "sdarts_adv", "pcdarts", "pdarts@1", "pdarts@2", "pdarts@3", "drnas", "gdas", "snas",
           "fairdarts", "beta_darts", "darts_minus", "darts_pt"]


def build(preset: str, args: argparse.Namespace, fused: bool | None = None):
    """The preset's supernet, optimisers and a function running one search step; plus a description.
    ``fused``: whether the mixed edges are fused (default: ``--fused``)."""
    import torch
    import torch.nn.functional as F

    from nasrun.config.compose import compose, to_typed
    from nasrun.methods import (ArchBatch, ArchObjective, apply_arch_step, make_estimator, make_perturbation,
                                make_schedule)
    from nasrun.search.state import build_supernet
    from nasrun.spaces.space import Space
    from nasrun.supernet import keep_strongest

    method, _, stage = preset.partition("@")
    fused = args.fused if fused is None else fused
    overrides = [f"method={method}", f"supernet.C={args.C}", f"search.batch_size={args.batch}",
                 f"supernet.fused={str(fused).lower()}"]
    if not stage:
        overrides.append(f"supernet.layers={args.layers}")
    if method == "drnas":  # one stage on every channel: the step of DARTS' size (its stages see 1/6, then 1/4)
        overrides += ["schedule.stage_partial_channels=[1]", "schedule.stage_ops=[null]"]
    cfg = to_typed(compose("search", overrides))
    device = torch.device(args.device)
    torch.manual_seed(0)
    stage_index = int(stage) - 1 if stage else 0
    schedule = make_schedule(cfg.schedule, cfg.supernet.layers, list(cfg.supernet.skip_dropout), cfg.search.epochs,
                             cfg.search.arch_warmup_epochs)
    plan = schedule.stages[stage_index]
    space = Space(cfg.space)
    ops = space.ops
    edge_ops = None
    if stage_index > 0:  # the op sets a stage starts from: keep the strongest of random weights, stage by stage
        edges = space.num_edges
        edge_ops = {k: space.edge_ops(space.cell_type(k, plan.layers)) for k in space.kinds(plan.layers)}
        for s in range(stage_index):
            keep = schedule.stages[s].keep
            edge_ops = {k: keep_strongest(torch.rand(edges, len(rows[0])), rows, keep, ops, drop_none=False)
                        for k, rows in edge_ops.items()}
    net = build_supernet(cfg, 10, args.channels, plan.layers, edge_ops).to(device)
    if plan.skip_dropout > 0:
        net.set_skip_dropout(plan.skip_dropout)
    s = cfg.search
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=s.arch_lr, betas=tuple(s.arch_betas),
                             weight_decay=s.arch_weight_decay)
    objective = ArchObjective()  # one objective shared by both, as in the search loop
    estimator, perturbation = make_estimator(cfg.estimator, objective), make_perturbation(cfg.perturbation, objective)
    shape = (args.batch, args.channels, args.size, args.size)
    x, xv = torch.randn(shape, device=device), torch.randn(shape, device=device)
    y, yv = (torch.randint(0, 10, (args.batch,), device=device) for _ in range(2))
    net.train()

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        net.alpha_map.begin_step()  # a map that samples once per step draws here
        arch = estimator(net, ArchBatch(x, y, xv, yv, w_opt, s.lr, 10, 50))
        apply_arch_step(net, arch, a_opt, estimator, s.arch_grad_clip)
        mix = perturbation(net, x, y, 10, 50)
        w_opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x) if mix is None else net(x, mix), y).backward()
        for p in net.arch_parameters():
            p.grad = None
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), s.grad_clip)
        w_opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    info = {"preset": preset, "cells": plan.layers, "ops_per_edge": net.alpha_shape("normal")[1],
            "K": cfg.supernet.partial_channels}
    return step, info


def memory(preset: str, args: argparse.Namespace) -> dict:
    """Peak memory of warm-up + repeats steps of one preset, alone in this process."""
    import torch

    device = torch.device(args.device)
    step, info = build(preset, args)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(args.warmup + args.repeats):
        step()
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {**info, "peak_bytes": peak, "step_bytes": peak - base}


def timing(presets: list[str], args: argparse.Namespace) -> dict:
    """Median step time per preset, the presets stepped in turn so that load hits them alike."""
    runs = {p: build(p, args)[0] for p in presets}
    for _ in range(args.warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {p: [] for p in presets}
    for _ in range(args.repeats):
        for p, run in runs.items():
            times[p].append(run())
    return {p: {"median_s": statistics.median(t), "min_s": min(t), "steps": len(t)} for p, t in times.items()}


def ops_per_step(preset: str, args: argparse.Namespace, fused: bool) -> int:
    """ATen operators dispatched during one search step of the preset, after a warm-up step."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import OpCounter

    step, _ = build(preset, args, fused)
    step()
    with OpCounter() as counter:
        step()
    return counter.ops


def _child(args: argparse.Namespace, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--C", type=int, default=8, help="supernet width (papers: 16)")
    p.add_argument("--layers", type=int, default=5, help="cells, except P-DARTS' stages (papers: 8)")
    p.add_argument("--batch", type=int, default=32, help="batch of each split (papers: 64; PC-DARTS 256)")
    p.add_argument("--size", type=int, default=16, help="image height and width (CIFAR: 32)")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed steps (rounds) per preset")
    p.add_argument("--presets", nargs="+", default=PRESETS)
    p.add_argument("--fused", action="store_true", help="fused mixed edges (supernet.fused=true) for every preset")
    p.add_argument("--ops", action="store_true",
                   help="count the ATen operators of one step per preset, unfused and fused, instead of timing")
    p.add_argument("--memory-of", help=argparse.SUPPRESS)
    p.add_argument("--timing", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps(memory(args.memory_of, args)))
        return
    if args.timing:
        print(json.dumps(timing(args.presets, args)))
        return
    if args.ops:
        for preset in args.presets:
            for fused in (False, True):
                print(f"preset={preset} fused={str(fused).lower()} ops_per_step={ops_per_step(preset, args, fused)}",
                      flush=True)
        return

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"cpu, {args.threads or torch.get_num_threads()} threads")
    print(f"one search step after warm-up; C={args.C}, {args.layers} cells (P-DARTS: its stages), batch {args.batch} "
          f"per split of {args.channels}x{args.size}x{args.size}; {where}; torch {torch.__version__}; "
          f"median of {args.repeats} interleaved steps after {args.warmup}; "
          f"{'fused' if args.fused else 'plain'} mixed edges")
    mem = {preset: _child(args, "--memory-of", preset) for preset in args.presets}
    times = _child(args, "--timing")
    label = "peak CUDA alloc" if args.device.startswith("cuda") else "peak RSS"
    print(f"{'preset':<11}{'cells':>6}{'ops':>5}{'K':>3}{'median ms':>11}{'x darts':>9}{'images/s':>10}"
          f"{label + ' MiB':>19}{'step MiB':>10}{'x darts':>9}")
    base_t = times.get("darts") if "error" not in times else None
    base_m = mem.get("darts") if "error" not in mem.get("darts", {"error": 1}) else None
    for preset in args.presets:
        m = mem[preset]
        if "error" in m or "error" in times:
            print(f"{preset:<11} failed: {m.get('error') or times.get('error')}")
            continue
        t = times[preset]["median_s"]
        speed = f"{t / base_t['median_s']:.2f}" if base_t else "-"
        ratio = f"{m['step_bytes'] / base_m['step_bytes']:.2f}" if base_m and base_m["step_bytes"] > 0 else "-"
        print(f"{preset:<11}{m['cells']:>6}{m['ops_per_edge']:>5}{m['K']:>3}{t * 1000:>11.1f}{speed:>9}"
              f"{2 * args.batch / t:>10.1f}{m['peak_bytes'] / 2**20:>19.1f}{m['step_bytes'] / 2**20:>10.1f}{ratio:>9}")


if __name__ == "__main__":
    main()
