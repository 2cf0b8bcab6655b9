"""Skip-connection collapse, offline: DARTS, second-order DARTS, Amended-DARTS and SDARTS-RS side by side.

On R-DARTS' S3 (every edge chooses among none, skip_connect and sep_conv_3x3) DARTS is known to drift
towards parameter-free skip connections as the search goes on, while the dominant eigenvalue of the
validation-loss Hessian w.r.t. the alphas grows (R-DARTS' signal). This script runs every method over
several seeds with the same settings and the eigenvalue tracked, then writes

    <out>/collapse.md    per epoch: skip count and parametric-op count of the derived normal cell, and the
                         eigenvalue (mean over seeds, per-seed values in brackets)
    <out>/collapse.csv   the same, one row per (method, seed, epoch)
    <out>/collapse.png   one panel per measure, one line per method (mean over seeds), shaded min..max

    python scripts/collapse.py                                  # fashion_mnist, rdarts_s3, 3 seeds
    python scripts/collapse.py --dataset digits --space rdarts_s2 --epochs 20 --jobs 2
    python scripts/collapse.py --population --seeds 0 1 2 3 4       # each method's seeds as one population
    python scripts/collapse.py --population --engine stacked        # ... trained stacked in one network

Each run is an ordinary search run folder under <out>/runs/, so `nasrun report` can read them too.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import statistics
from pathlib import Path

METHODS = {
    "darts": ["method=darts"],
    "darts_2nd": ["method=darts_2nd"],
    "amended_eta0.1": ["method=amended", "estimator.eta=0.1"],
    "amended_eta1": ["method=amended", "estimator.eta=1.0"],
    "sdarts_rs": ["method=sdarts_rs"],
    "drnas": ["method=drnas", "search.arch_warmup_epochs=0", "search.lr=0.025", "search.lr_min=0.001",
              "schedule.stage_partial_channels=[1]", "schedule.stage_ops=[null]"],  # one stage, every channel
    "gdas": ["method=gdas", "search.weight_decay=3e-4"],
    "snas": ["method=snas"],
    "fairdarts": ["method=fairdarts", "search.lr=0.025"],
    "beta_darts": ["method=beta_darts"],
    "darts_minus": ["method=darts_minus"],
    # DARTS-PT: the DARTS supernet (its epochs are DARTS'), then the perturbation selection with one tuning epoch
    # between decisions (17 decisions and tuning epochs on S3's 4-node cells, instead of 81 at the released 5)
    "darts_pt": ["method=darts_pt", "selection.interval=1"],
}
#: The stable family runs with the study's epochs, batch, size and DARTS' weight lr and decay, so that only its
#: way from alphas to mixing weights, its regulariser and its alpha optimiser differ from DARTS.
MEASURES = {"skip_normal": "skip connections", "parametric_normal": "parametric ops", "eigenvalue": "eigenvalue"}


def run_one(job: tuple[str, int, list[str], str, int]) -> tuple[str, int, dict[str, list[float]]]:
    name, seed, overrides, out, threads = job
    import torch

    torch.set_num_threads(threads)
    from nasrun.config.compose import compose, to_typed
    from nasrun.search.loop import run_search

    folder = Path(out) / "runs" / f"{name}_s{seed}"
    cfg = to_typed(compose("search", [*overrides, *METHODS[name], f"seed={seed}", "progress=false"]))
    run_search(cfg, folder)
    return collect_one(name, seed, out)


def run_populations(jobs: list[tuple[str, int, list[str], str, int]], engine: str = "turns") -> list:
    """Every (method, seed) run, the runs that differ only in member keys as one population each (``engine``:
    the population's engine, turns or stacked)."""
    import time

    import torch

    from nasrun.config.compose import as_plain_dict, compose, to_typed
    from nasrun.config.members import group_jobs
    from nasrun.run.population import Member, run_population

    torch.set_num_threads(jobs[0][4])
    configs = [to_typed(compose("search", [*o, *METHODS[name], f"seed={seed}", "progress=false"]))
               for name, seed, o, _, _ in jobs]
    groups = group_jobs([as_plain_dict(c) for c in configs], "search", len(configs))
    started = time.perf_counter()
    for group in groups:
        run_population([Member(configs[i], Path(jobs[i][3]) / "runs" / f"{jobs[i][0]}_s{jobs[i][1]}") for i in group],
                       engine)
    wall = time.perf_counter() - started
    own = sum(json.loads((Path(out) / "runs" / f"{name}_s{seed}" / "result.json").read_text())["wall_seconds"]
              for name, seed, _, out, _ in jobs)
    print(f"{len(jobs)} searches as {len(groups)} populations ({engine}): {wall:.0f} s wall; the members' own "
          f"search times sum to {own:.0f} s", flush=True)
    return [collect_one(name, seed, out) for name, seed, _, out, _ in jobs]


def collect_one(name: str, seed: int, out: str) -> tuple[str, int, dict[str, list[float]]]:
    """Per measure, its value after every epoch of one run (parametric ops = kept edges that are not parameter-free)."""
    folder = Path(out) / "runs" / f"{name}_s{seed}"
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()] \
        if (folder / "metrics.jsonl").exists() else []
    genotypes = [json.loads(line)["genotype"] for line in (folder / "genotypes.jsonl").read_text().splitlines()] \
        if (folder / "genotypes.jsonl").exists() else []
    kept = [sum(len(c["edges"]) for c in g["cells"].values() if not c["reduction"]) for g in genotypes]
    series = {"skip_normal": [r["skip_normal"] for r in rows],
              "parametric_normal": [k - r["param_free_normal"] for k, r in zip(kept, rows)],
              "eigenvalue": [r.get("eigenvalue", float("nan")) for r in rows]}
    return name, seed, series


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/collapse")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--space", default="rdarts_s3")
    p.add_argument("--subset", default="50", help="dataset.subset: images per class (or a fraction); 0 = all")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eigen-batches", type=int, default=2, help="search-val batches of the Hessian eigenvalue")
    p.add_argument("--eigen-iters", type=int, default=10, help="power iterations of the Hessian eigenvalue")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--population", action="store_true",
                   help="run the seeds (and etas) of each method as one population in this process")
    p.add_argument("--engine", default="turns", choices=["turns", "stacked"],
                   help="with --population: members take turns, or train stacked in one network")
    p.add_argument("--collect", action="store_true",
                   help="only build the table and plot from the run folders already under <out>/runs "
                        "(unfinished runs count up to the last epoch every run reached)")
    args = p.parse_args()

    overrides = [
        f"dataset={args.dataset}",
        f"space={args.space}",
        "search.track_eigenvalue=true",
        f"search.eigen_batches={args.eigen_batches}",
        f"search.eigen_iters={args.eigen_iters}",
        f"search.epochs={args.epochs}",
        f"search.batch_size={args.batch}",
        f"supernet.C={args.C}",
        f"supernet.layers={args.layers}",
        "device=cpu",
    ]
    if args.subset and args.subset != "0":
        overrides.append(f"dataset.subset={args.subset}")
    jobs = [(m, s, overrides, args.out, args.threads) for m in args.methods for s in args.seeds]
    if args.collect:
        results = [collect_one(m, s, args.out) for m, s, *_ in jobs]
        results = [r for r in results if r[2]["skip_normal"]]
        shortest = min(len(r[2]["skip_normal"]) for r in results)
        results = [(m, s, {k: v[:shortest] for k, v in series.items()}) for m, s, series in results]
    elif args.population:
        results = run_populations(jobs, args.engine)
    elif args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(run_one, jobs, chunksize=1)
    else:
        results = [run_one(j) for j in jobs]

    longest = max(len(series["skip_normal"]) for _, _, series in results)
    for name, seed, series in results:
        if len(series["skip_normal"]) < longest:
            print(f"{name} seed {seed}: {len(series['skip_normal'])} of {longest} epochs (see its result.json); "
                  "left out of the table")
    results = [r for r in results if len(r[2]["skip_normal"]) == longest]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    by_method: dict[str, dict[int, dict[str, list[float]]]] = {}
    for name, seed, series in results:
        by_method.setdefault(name, {})[seed] = series
    with open(out / "collapse.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "seed", "epoch", *MEASURES])
        for name, seeds in by_method.items():
            for seed, series in sorted(seeds.items()):
                for epoch, values in enumerate(zip(*(series[m] for m in MEASURES))):
                    w.writerow([name, seed, epoch + 1, *values])
    table = _markdown(by_method, args)
    (out / "collapse.md").write_text(table)
    print(table)
    _plot(by_method, out / "collapse.png", args)


def _cell(values: list[float], measure: str) -> str:
    shown = ", ".join(f"{v:.3g}" if measure == "eigenvalue" else f"{v:g}" for v in values)
    return f"{statistics.mean(values):.3g} ({shown})"


def final_genotype(name: str, seed: int, out: str) -> dict[str, int] | None:
    """Skip connections and parametric ops of the normal cell of a run's genotype.json (the selection's, when the
    method selects after the search); None before the run has finished."""
    path = Path(out) / "runs" / f"{name}_s{seed}" / "genotype.json"
    if not path.exists():
        return None
    normal = [c for c in json.loads(path.read_text())["cells"].values() if not c["reduction"]][0]["edges"]
    free = {"none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "noise"}
    return {"skips": sum(op == "skip_connect" for op, *_ in normal), "parametric": sum(op not in free for op, *_ in normal)}


def _final_table(by_method: dict, args) -> list[str]:
    lines = ["**final genotype** (genotype.json; for darts_pt the perturbation selection's): skip connections / "
             "parametric ops of the normal cell, mean ± std over seeds", "",
             "| method | skips | parametric |", "|---|---|---|"]
    for name, seeds in by_method.items():
        finals = [f for f in (final_genotype(name, s, args.out) for s in sorted(seeds)) if f is not None]
        if finals:
            cells = [_mean_std([f[k] for f in finals]) for k in ("skips", "parametric")]
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return lines + [""]


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def _markdown(by_method: dict, args) -> str:
    names = list(by_method)
    epochs = len(next(iter(next(iter(by_method.values())).values()))["skip_normal"])
    lines = [f"space={args.space}, {args.dataset} (subset {args.subset}), supernet C={args.C}, {args.layers} cells, "
             f"batch {args.batch}, seeds {args.seeds}. Normal cell: skip connections and parametric ops (of its kept "
             "edges); eigenvalue: dominant eigenvalue of the validation-loss Hessian w.r.t. the alphas. Cells: mean "
             "over seeds (per-seed values in brackets).", ""]
    for measure, title in MEASURES.items():
        lines += [f"**{title}**", "", "| epoch | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for e in range(epochs):
            if e not in (0, epochs - 1) and (e + 1) % max(1, epochs // 8):
                continue
            cells = [_cell([s[measure][e] for _, s in sorted(by_method[n].items())], measure) for n in names]
            lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines + _final_table(by_method, args))


def _plot(by_method: dict, path: Path, args) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(5 * len(MEASURES), 4))
    for ax, (measure, title) in zip(axes, MEASURES.items()):
        for name, seeds in by_method.items():
            runs = [s[measure] for _, s in sorted(seeds.items())]
            epochs = range(1, len(runs[0]) + 1)
            ax.plot(epochs, [statistics.mean(v) for v in zip(*runs)], label=name)
            ax.fill_between(epochs, [min(v) for v in zip(*runs)], [max(v) for v in zip(*runs)], alpha=0.15)
        ax.set_xlabel("epoch")
        ax.set_ylabel(title + (" (normal cell)" if measure != "eigenvalue" else ""))
    axes[0].legend()
    fig.suptitle(f"{args.dataset}, space={args.space}, {len(args.seeds)} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
