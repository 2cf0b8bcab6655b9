"""Skip-connection collapse: DARTS (second order) against Amended-DARTS on a two-op space.

On the space {skip_connect, sep_conv_3x3} (every edge chooses between a parameter-free skip and a
convolution) DARTS is known to drift towards skip connections as the search goes on. This script
runs every method over several seeds with the same settings, then writes

    <out>/skips.md     the skip count of the derived normal cell per epoch (mean over seeds and per seed)
    <out>/skips.csv    the same, one row per (method, seed, epoch)
    <out>/skips.png    one line per method (mean over seeds), shaded min..max

    python scripts/collapse.py --epochs 30 --seeds 0 1 2 --jobs 6
    python scripts/collapse.py --dataset fashion_mnist --subset 100 --epochs 20

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
}


def run_one(job: tuple[str, int, list[str], str, int]) -> tuple[str, int, list[int]]:
    name, seed, overrides, out, threads = job
    import torch

    torch.set_num_threads(threads)
    from nasrun.config import compose, to_typed
    from nasrun.search import run_search

    folder = Path(out) / "runs" / f"{name}_s{seed}"
    cfg = to_typed(compose("search", [*overrides, *METHODS[name], f"seed={seed}", "progress=false"]))
    run_search(cfg, folder)
    return collect_one(name, seed, out)


def collect_one(name: str, seed: int, out: str) -> tuple[str, int, list[int]]:
    path = Path(out) / "runs" / f"{name}_s{seed}" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return name, seed, [r["skip_normal"] for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/collapse")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--subset", default=None, help="dataset.subset (e.g. 100 images per class for fashion_mnist)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--collect", action="store_true",
                   help="only build the table and plot from the run folders already under <out>/runs "
                        "(unfinished runs count up to the last epoch every run reached)")
    args = p.parse_args()

    overrides = [
        f"dataset={args.dataset}",
        "space.name=s2",
        "space.ops=[skip_connect,sep_conv_3x3]",
        f"search.epochs={args.epochs}",
        f"search.batch_size={args.batch}",
        f"supernet.C={args.C}",
        f"supernet.layers={args.layers}",
        "device=cpu",
    ]
    if args.subset:
        overrides.append(f"dataset.subset={args.subset}")
    jobs = [(m, s, overrides, args.out, args.threads) for m in args.methods for s in args.seeds]
    if args.collect:
        results = [collect_one(m, s, args.out) for m, s, *_ in jobs]
        results = [r for r in results if r[2]]
        shortest = min(len(r[2]) for r in results)
        results = [(m, s, skips[:shortest]) for m, s, skips in results]
    elif args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(run_one, jobs, chunksize=1)
    else:
        results = [run_one(j) for j in jobs]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    by_method: dict[str, dict[int, list[int]]] = {}
    for name, seed, skips in results:
        by_method.setdefault(name, {})[seed] = skips
    with open(out / "skips.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "seed", "epoch", "skip_normal"])
        for name, seeds in by_method.items():
            for seed, skips in sorted(seeds.items()):
                for epoch, k in enumerate(skips):
                    w.writerow([name, seed, epoch + 1, k])
    table = _markdown(by_method, args)
    (out / "skips.md").write_text(table)
    print(table)
    _plot(by_method, out / "skips.png", args)


def _markdown(by_method: dict, args) -> str:
    names = list(by_method)
    epochs = len(next(iter(next(iter(by_method.values())).values())))
    lines = [
        f"Skip connections in the derived normal cell (of 8 edges), space {{skip_connect, sep_conv_3x3}}, "
        f"{args.dataset}, supernet C={args.C}, {args.layers} cells, batch {args.batch}, seeds {args.seeds}.",
        "Cells: mean over seeds (per-seed values in brackets).",
        "",
        "| epoch | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for e in range(epochs):
        if e not in (0, epochs - 1) and (e + 1) % max(1, epochs // 10):
            continue
        cells = []
        for n in names:
            vals = [s[e] for _, s in sorted(by_method[n].items())]
            cells.append(f"{statistics.mean(vals):.2f} ({', '.join(map(str, vals))})")
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(by_method: dict, path: Path, args) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, seeds in by_method.items():
        runs = [s for _, s in sorted(seeds.items())]
        epochs = range(1, len(runs[0]) + 1)
        mean = [statistics.mean(v) for v in zip(*runs)]
        ax.plot(epochs, mean, label=name)
        ax.fill_between(epochs, [min(v) for v in zip(*runs)], [max(v) for v in zip(*runs)], alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("skip connections in the normal cell")
    ax.set_title(f"{args.dataset}, space {{skip, sep_conv_3x3}}, {len(args.seeds)} seeds")
    ax.set_ylim(-0.2, 8.2)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
