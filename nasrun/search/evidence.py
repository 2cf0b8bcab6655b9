"""What the search measures about its own trajectory besides losses: the seeds' evidence of (in)stability.

After every epoch the loop asks :class:`Evidence` for extra metrics columns:

- ``eigenvalue`` (``search.track_eigenvalue``): the dominant eigenvalue of the validation-loss Hessian
  with respect to the alphas on a fixed set of search-val batches (R-DARTS' early-stop signal);
- ``bench_<metric>`` (``benchmark=nb201 benchmark.path=FILE``): the looked-up accuracies of the
  derived cell in a benchmark table.

Both leave the search trajectory unchanged (no RNG draws, no BN updates, no gradients left behind).
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Any, Callable, Optional

import torch
from torch import nn

from nasrun.config.schema import NasrunConf
from nasrun.data import eval_batches

log = logging.getLogger(__name__)


class Evidence:
    """Per-epoch extra columns; empty when nothing is tracked."""

    def __init__(self, cfg: NasrunConf, data: Any, val_idx: torch.Tensor, device: torch.device) -> None:
        s = cfg.search
        self.seed = cfg.seed
        self.iters = s.eigen_iters
        self.batches: Optional[list] = None
        if s.track_eigenvalue:  # a fixed set: the first batches of the search-val half, in order
            self.batches = list(islice(eval_batches(data.train, val_idx, s.batch_size, data.mean, data.std, device),
                                       s.eigen_batches))
        self.table = open_benchmark(cfg.benchmark)
        self.warned = False

    def measure(self, model: nn.Module, genotype: Any) -> dict[str, float]:
        row: dict[str, float] = {}
        if self.batches is not None:
            from nasrun.search.eigen import dominant_eigenvalue

            row["eigenvalue"] = dominant_eigenvalue(model, self.batches, iters=self.iters, seed=self.seed)["eigenvalue"]
        if self.table is not None:
            row.update(self._lookup(genotype))
        return row

    def lookup(self, genotype: Any) -> dict[str, Optional[float]]:
        """The benchmark columns of a genotype (none without a table)."""
        return self._lookup(genotype) if self.table is not None else {}

    def _lookup(self, genotype: Any) -> dict[str, Optional[float]]:
        """The table's values for the derived cell; a cell a partial table lacks gets empty columns (warned once)."""
        from nasrun.genotype.benchmarks import BenchmarkError

        try:
            return self.table.lookup(genotype)
        except BenchmarkError as exc:
            if not self.warned:
                log.warning("benchmark: %s; its bench_* columns stay empty", exc)
                self.warned = True
            return {f"bench_{m}": None for m in self.table.metrics}


def open_benchmark(conf: Any) -> Any:
    """The benchmark table the config names (loaded once), or None."""
    if not conf.has_table:  # the option says (benchmark=none has none)
        return None
    from nasrun.genotype.benchmarks import load_table

    return load_table(conf.path, conf.kind)


class EpochLog:
    """Where a finished epoch goes besides metrics.jsonl: TensorBoard with ``logger=tensorboard``, else nowhere."""

    def __init__(self, cfg: NasrunConf, run_dir: Any, command: str) -> None:
        self.writer = None
        if cfg.logger == "tensorboard":
            from nasrun.report.tensorboard import TensorBoardWriter

            self.writer = TensorBoardWriter(run_dir, command)

    def epoch(self, epoch: int, row: dict, images: Optional[Callable[[], tuple[Any, Optional[dict]]]] = None) -> None:
        """``images``: called only when something is written, returns (genotype, alphas history) to draw."""
        if self.writer is not None:
            genotype, alphas = images() if images is not None else (None, None)
            self.writer.epoch(epoch, row, genotype=genotype, alphas=alphas)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
