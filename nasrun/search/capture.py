"""Compiled supernet forwards (``search.compile``): torch.compile, or CUDA graphs through its reduce-overhead mode.

The eager supernet is launch-bound on a GPU (docs/performance.md: 11k to 41k operators per forward and
backward); a compiled forward fuses them and a CUDA graph replays them with one launch. Neither may
cost a search: whatever fails while compiling (dynamo, inductor, a missing C++ compiler or triton)
is logged once and the search goes on eagerly with the same module, so estimators keep calling
``model.weight_parameters()``, ``model.genotype()`` and ``model(x, weights)`` on one ``SuperNet``.

Only the search steps' forwards are compiled: training mode, gradients on, mixing weights that carry
gradient. Evaluation skips zero-weighted ops by reading the weights on the host, which would break
the graph, and an eval-mode forward with gradients on is the eigenvalue's double backward, which
compiled graphs do not support; both run eagerly.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: ``search.compile`` values: eager, torch.compile's default mode, or its CUDA-graph mode (reduce-overhead).
MODES = ("off", "compile", "graph")
#: torch.compile's mode per ``search.compile`` value.
TORCH_MODES = {"compile": "default", "graph": "reduce-overhead"}
#: What the first compiled step costs, said on the console before it starts: on a CPU, inductor writes and
#: builds C++ (experiment=quickstart's supernet: 558 s on 2 cores, its first epoch of 11 steps 990 s; eager 3 s).
FIRST_STEP = {"cpu": "10 minutes or more on a CPU", "cuda": "a minute or more"}


@dataclass
class Capture:
    """The mode a search asked for, the one it runs, and why they differ (result.json's ``compile``)."""

    requested: str = "off"
    used: str = "off"
    reason: Optional[str] = None

    @classmethod
    def plan(cls, requested: str, device: torch.device, estimator: Any = None,
             skip_dropout: Sequence[float] = ()) -> "Capture":
        """The mode to use on ``device`` for ``estimator`` (its option, or None) and the run's ``supernet.skip_dropout``;
        logs why when it is not the one asked for."""
        used, reason = requested, None
        if requested != "off":
            used, reason = _effective(requested, device, estimator, skip_dropout)
        if reason is not None:
            log.warning("search.compile=%s runs as %s: %s", requested, used, reason)
        if used != "off" and device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once
        return cls(requested, used, reason)

    def apply(self, model: nn.Module) -> nn.Module:
        """Compile ``model``'s forward in place (the same module object); a no-op when the mode is off."""
        if self.used != "off":
            model.forward = GuardedForward(model, self)
            log.info("search.compile=%s: the supernet's search-step forward is compiled at its first step",
                     self.used)
        return model

    def failed(self, exc: BaseException) -> None:
        """A compilation failed: say why, and run eagerly from now on (later stages included)."""
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        self.reason = f"compilation failed ({text[:300]})"
        log.warning("search.compile=%s failed; the search continues eagerly: %s", self.used, self.reason)
        self.used = "off"

    def record(self) -> dict[str, Any]:
        return {"requested": self.requested, "used": self.used, "reason": self.reason}


def _effective(requested: str, device: torch.device, estimator: Any,
               skip_dropout: Sequence[float]) -> tuple[str, Optional[str]]:
    """What can run of ``requested``, and the reason when that is less."""
    products = estimator.double_backward() if estimator is not None else None  # the option says, as set
    if products is not None:
        return "off", (f"estimator={estimator.name} with {products.setting} takes a double backward "
                       "through the supernet, which compiled graphs do not support")
    if any(rate > 0 for rate in skip_dropout):
        return "off", ("supernet.skip_dropout changes its rate every epoch, and a compiled graph holds the rate "
                       "as a constant (a recompilation per epoch, eager after torch's recompile limit)")
    if requested == "graph" and device.type != "cuda":
        return "compile", f"CUDA graphs need a CUDA device, and the device is {device.type}"
    return requested, None


class GuardedForward:
    """The supernet's forward, compiled where it can be, eager where it must be or where compiling failed.

    The first compiled call for each input shape (and autocast dtype) is a trial: a forward and backward on
    detached copies of the mixing weights compile both graphs (AOT autograd compiles the backward lazily,
    where a failure would escape), with BN buffers and RNG restored afterwards, so a failure falls back
    before the real call.
    """

    def __init__(self, model: nn.Module, capture: Capture) -> None:
        self.eager: Callable[..., Tensor] = type(model).forward.__get__(model)
        self.capture = capture
        self.graphs = capture.used == "graph"
        self.tried: set[tuple] = set()
        self.compiled: Optional[Callable[..., Tensor]] = None
        try:
            self.compiled = torch.compile(self.eager, mode=TORCH_MODES[capture.used], dynamic=False)
        except Exception as exc:  # noqa: BLE001 - e.g. dynamo unsupported on this Python
            capture.failed(exc)

    def __call__(self, x: Tensor, mix: Optional[dict[str, Tensor]] = None) -> Tensor:
        model = self.eager.__self__
        if mix is None and self.compiled is not None and model.training and torch.is_grad_enabled():
            mix = model.mixing_weights()  # outside the graph, so both kinds of call share one graph
        if not self._compilable(model, mix):
            return self.eager(x, mix)
        key = (tuple(x.shape), x.dtype, x.device, x.stride(), _autocast(x.device))
        if key not in self.tried and not self._trial(model, x, mix):
            return self.eager(x, mix)
        self.tried.add(key)
        try:
            out = self.compiled(x, mix)
        except Exception as exc:  # noqa: BLE001 - e.g. a recompilation the trial did not see
            self._give_up(exc)
            return self.eager(x, mix)
        return out.clone() if self.graphs else out  # a replay reuses its output memory

    def _compilable(self, model: nn.Module, mix: Optional[dict[str, Tensor]]) -> bool:
        return (self.compiled is not None and model.training and torch.is_grad_enabled() and mix is not None
                and all(w.requires_grad for w in mix.values()))

    def _trial(self, model: nn.Module, x: Tensor, mix: dict[str, Tensor]) -> bool:
        """Compile the forward and backward graphs for this shape; False (and eager from now on) if that fails."""
        log.info("search.compile=%s: compiling the supernet's forward and backward for inputs %s; this may take %s "
                 "(search.compile=off runs eagerly)", self.capture.used, tuple(x.shape),
                 FIRST_STEP.get(x.device.type, "minutes"))
        started = time.perf_counter()
        buffers = [b.detach().clone() for b in model.buffers()]
        rng = _rng_state(x.device)
        try:
            probe = {k: w.detach().requires_grad_() for k, w in mix.items()}
            out = self.compiled(x, probe)
            inputs = [p for p in model.parameters() if p.requires_grad] + list(probe.values())
            torch.autograd.grad(out.float().sum(), inputs, allow_unused=True)
            ok = True
            log.info("search.compile=%s: compiled in %.0f s", self.capture.used, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - dynamo, inductor, a C++ compiler or triton
            self._give_up(exc)
            ok = False
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        _set_rng_state(rng, x.device)
        return ok

    def _give_up(self, exc: BaseException) -> None:
        self.compiled = None
        self.capture.failed(exc)

    def __deepcopy__(self, memo: dict) -> Callable[..., Tensor]:
        """A copy of the model (ZARTS' scratch networks) runs eagerly: the compiled function is bound to this one."""
        twin = copy.deepcopy(self.eager.__self__, memo)
        return type(twin).forward.__get__(twin)


def _autocast(device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype in force on ``device``'s type (None when off): each one compiles its own graphs."""
    try:
        on = torch.is_autocast_enabled(device.type)
        return torch.get_autocast_dtype(device.type) if on else None
    except (TypeError, AttributeError):  # an older torch: the CUDA flag only
        return torch.float16 if torch.is_autocast_enabled() else None


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


__all__ = ["Capture", "GuardedForward", "MODES"]
