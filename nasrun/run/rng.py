"""The random state of a run: saved and restored with the checkpoint, and seeded at the start; the device it runs on."""

from __future__ import annotations

import random
from typing import Any, Callable, Optional, Sequence, TypeVar

import torch

T = TypeVar("T")

from nasrun.errors import RunFolderError
from nasrun.run.files import AFRESH


def rng_state(device: torch.device) -> dict:
    """Every RNG a run draws from, as values torch.load(weights_only=True) reads back."""
    import numpy as np

    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *(_plain(v) for v in np_state[2:])],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _plain(value: Any) -> int | float:
    """A numpy scalar as a Python number (numpy types are not weights_only-safe)."""
    return value.item() if hasattr(value, "item") else value


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore :func:`rng_state`'s output; keys a checkpoint lacks (older versions, another device) are skipped."""
    try:
        torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
        if device.type == "cuda" and "cuda" in state:  # dropout draws on the device continue too
            torch.cuda.set_rng_state(state["cuda"].to("cpu", torch.uint8), device)
        if "python" in state:
            version, internal, gauss = state["python"]
            random.setstate((version, tuple(internal), gauss))
        if "numpy" in state:
            import numpy as np

            name, keys, *rest = state["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise RunFolderError(f"the checkpoint's RNG state cannot be restored ({type(exc).__name__}: {exc}); "
                             f"{AFRESH}") from None


class OwnRandom:
    """The process-wide random state one population member draws from (torch's, numpy's and Python's generators,
    the CUDA generator, the noise op's source): set before the member runs and kept aside after."""

    def __init__(self) -> None:
        self.state: Optional[tuple] = None

    def restore(self) -> None:
        if self.state is not None:
            from nasrun.spaces.ops import NOISE

            device, generators, noise = self.state
            set_rng_state(generators, device)
            NOISE.load_state_dict(noise)

    def keep(self, cfg: Any) -> None:
        from nasrun.spaces.ops import NOISE

        device = resolve_device(cfg.device)
        self.state = (device, rng_state(device), {k: v.clone() for k, v in NOISE.state_dict().items()})



def draw_as_each(members: Sequence[tuple[OwnRandom, Any]], draw: Callable[[int], T]) -> list[T]:
    """``draw(j)`` for each population member j, with the process drawing from that member's own state (which
    keeps the draws); the process's own state is saved once and comes back after. A stacked population's members
    draw their noise so, one by one, in a shared step. ``members``: each member's state and config."""
    outer = OwnRandom()
    outer.keep(members[0][1])
    out = []
    try:
        for j, (own, cfg) in enumerate(members):
            own.restore()
            try:
                out.append(draw(j))
            finally:
                own.keep(cfg)
    finally:
        outer.restore()
    return out


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if present else cpu; a cuda device where there is none is a ConfigError."""
    from nasrun.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} is not allowed: no CUDA device is available here (use device=cpu or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's RNGs."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
