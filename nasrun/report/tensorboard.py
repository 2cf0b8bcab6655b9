"""An optional TensorBoard view of a run (``logger=tensorboard``): per-epoch scalars and images.

Each epoch's metrics.jsonl row goes to ``<run folder>/tensorboard`` as scalars grouped by kind, at
``global_step = epoch + 1`` (the 1-based epochs the console shows):

- ``loss/<key>``: keys containing ``loss``;
- ``benchmark/<key>``: ``bench_*`` lookups (percent already);
- ``accuracy/<key>``: keys containing ``acc``, in percent (fractions in metrics.jsonl);
- ``architecture/<key>``: ``skip_*``, ``param_free_*``, ``alpha_entropy_*``, ``eigenvalue``;
- ``time/<key>``: ``seconds``, ``images_per_s``;
- ``other/<key>``: every other number (``lr``, ``images``, the estimator's diagnostics, ...).

``epoch`` itself, booleans, None and non-finite values are left out. With a genotype the cell diagram
is added as the image ``cells``, with the alpha history (an ``alphas.npz`` or a dict alike) the
heatmap of its last epoch as ``alphas``; a figure that cannot be drawn is a warning, never the end of
the run. Writing into an existing folder (a resumed run) appends a new event file.
"""

from __future__ import annotations

import logging
import math
import numbers
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from nasrun.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["TensorBoardWriter", "FOLDER", "INSTALL_HINT", "scalar_tag", "scalars"]

#: The writer's folder inside the run folder.
FOLDER = "tensorboard"
INSTALL_HINT = "logger=tensorboard needs the tensorboard package: pip install 'nasrun[tensorboard]'"

_ARCHITECTURE_PREFIXES = ("skip_", "param_free_", "alpha_entropy_")
_TIME_KEYS = ("seconds", "images_per_s")


def scalar_tag(key: str) -> tuple[str, float]:
    """The TensorBoard tag of a metrics.jsonl key and the factor its value is written with."""
    if key.startswith("bench_"):
        return f"benchmark/{key}", 1.0
    if "loss" in key:
        return f"loss/{key}", 1.0
    if "acc" in key:
        return f"accuracy/{key}", 100.0
    if key.startswith(_ARCHITECTURE_PREFIXES) or key == "eigenvalue":
        return f"architecture/{key}", 1.0
    if key in _TIME_KEYS:
        return f"time/{key}", 1.0
    return f"other/{key}", 1.0


def _number(value: Any) -> Optional[float]:
    """The value as a finite float, or None (not a number, a bool, None, NaN or infinite)."""
    if value is None or isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """tag -> value of every number of a metrics row but ``epoch`` (accuracies in percent)."""
    out = {}
    for key, value in row.items():
        number = _number(value)
        if key == "epoch" or number is None:
            continue
        tag, factor = scalar_tag(str(key))
        out[tag] = number * factor
    return out


def _read_png(path: Path) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array of a PNG (alpha dropped: the figures are drawn on white)."""
    from matplotlib.image import imread

    image = np.asarray(imread(path))
    if image.dtype.kind == "f":
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


class TensorBoardWriter:
    """Per-epoch scalars and images of a run into <run folder>/tensorboard (off unless logger=tensorboard)."""

    def __init__(self, run_dir: Path, command: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None
        self.command = command
        self.path = Path(run_dir) / FOLDER
        self.path.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(log_dir=str(self.path), filename_suffix=f".{command}" if command else "")
        self._failed: set[str] = set()  # image tags that failed once: warned, then only debug-logged
        log.info("tensorboard: %s epochs to %s (tensorboard --logdir %s)", command, self.path, self.path)

    def epoch(self, epoch: int, row: dict, genotype=None, alphas: Optional[dict] = None) -> None:
        """The scalars of one epoch's metrics row, and the cell diagram and alpha heatmap when given."""
        if self._writer is None:
            raise RuntimeError("TensorBoardWriter.epoch after close")
        step = int(epoch) + 1
        for tag, value in scalars(row).items():
            self._writer.add_scalar(tag, value, step)
        if genotype is not None:
            self._image("cells", step, lambda path: _draw_cells(genotype, path, f"epoch {step}"))
        if alphas is not None:
            self._image("alphas", step,
                        lambda path: _draw_alphas(alphas, path, genotype))
        self._writer.flush()

    def _image(self, tag: str, step: int, draw) -> None:
        """Draw a figure to a temporary PNG and add it; a failure is logged, not raised."""
        try:
            with tempfile.TemporaryDirectory(prefix="nasrun-tb-") as tmp:
                path = Path(tmp) / f"{tag}.png"
                draw(path)
                image = _read_png(path)
            self._writer.add_image(tag, image, step, dataformats="HWC")
        except Exception as exc:  # noqa: BLE001 - a figure must never end the run
            level = logging.DEBUG if tag in self._failed else logging.WARNING
            log.log(level, "tensorboard: could not draw the %s image of epoch %d (%s: %s)%s", tag, step,
                    type(exc).__name__, exc, "" if tag in self._failed else "; the run continues without it")
            self._failed.add(tag)

    def close(self) -> None:
        """Flush and close the event file (a second call does nothing)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "TensorBoardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _draw_cells(genotype, path: Path, title: str) -> Path:
    from nasrun.report.cell_diagram import plot_genotype
    return plot_genotype(genotype, path, title=title)


def _draw_alphas(alphas, path: Path, genotype) -> Path:
    from nasrun.report.alpha_figures import plot_alphas
    return plot_alphas(alphas, path, epoch=-1, genotype=genotype)
