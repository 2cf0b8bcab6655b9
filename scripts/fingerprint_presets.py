"""Fingerprints of a seeded tiny digits search for every method preset: genotypes, alphas and metrics.

Run it before and after a change that must not alter what is computed; equal lines mean bit-identical
runs (the timing columns are left out, and genotypes are compared by content, whatever their file format).

    python scripts/fingerprint_presets.py [preset ...] [key=value ...]

Arguments with ``=`` are overrides added to every preset's run (``supernet.fused=false``: the plain supernet).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

PRESETS = ["darts", "darts_2nd", "amended", "nasp", "zarts", "sdarts_rs", "sdarts_adv", "pcdarts", "pdarts"]
TINY = ["dataset=digits", "search.epochs=2", "search.batch_size=32", "supernet.C=4", "supernet.layers=3",
        "space.nodes=2", "progress=false", "seed=5"]
EXTRA = {  # keep every preset to a few seconds while still exercising its parts
    "zarts": ["search.arch_warmup_epochs=0", "estimator.update_every=5", "estimator.inner_steps=2",
              "estimator.samples=2"],
    "pcdarts": ["search.arch_warmup_epochs=1", "search.batch_size=32", "supernet.partial_channels=2"],
    "pdarts": ["search.epochs=1", "search.arch_warmup_epochs=0", "schedule.stage_add_layers=[0,1,2]",
               "search.batch_size=32", "supernet.layers=3"],
}
DROP = {"seconds", "images_per_s"}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _cells(genotype: dict) -> list:
    """A genotype's content whatever its file format: per cell, its (op, source, target) edges and outputs."""
    if genotype.get("format") == "nasrun.genotype/1":
        return [[name, [[op, src, 2 + k // 2] for k, (op, src) in enumerate(genotype[name])],
                 list(genotype[f"{name}_concat"])] for name in ("normal", "reduce")]
    return [[name, cell["edges"], cell["concat"]] for name, cell in genotype["cells"].items()]


def _content(lines: list[str]) -> bytes:
    rows = [json.loads(line) for line in lines if line.strip()]
    return json.dumps([[r.get("epoch"), _cells(r["genotype"])] for r in rows]).encode()


def fingerprint(preset: str, extra: list[str] = ()) -> str:
    from nasrun.config.compose import compose, to_typed
    from nasrun.search.loop import run_search

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = to_typed(compose("search", [f"method={preset}", *TINY, *EXTRA.get(preset, []), *extra]))
        run_search(cfg, tmp)
        out = Path(tmp)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        metrics = json.dumps([{k: v for k, v in r.items() if k not in DROP} for r in rows], sort_keys=True)
        alphas = np.load(out / "alphas.npz")
        arrays = b"".join(alphas[k].tobytes() for k in sorted(alphas.files) if k != "ops")
        genotypes = _content((out / "genotypes.jsonl").read_text().splitlines())
        final = json.dumps(_cells(json.loads((out / "genotype.json").read_text()))).encode()
    return (f"{preset:<11} genotypes {_digest(genotypes)}  final {_digest(final)}  alphas {_digest(arrays)}  "
            f"metrics {_digest(metrics.encode())}")


if __name__ == "__main__":
    overrides = [a for a in sys.argv[1:] if "=" in a]
    for name in [a for a in sys.argv[1:] if "=" not in a] or PRESETS:
        print(fingerprint(name, overrides), flush=True)
