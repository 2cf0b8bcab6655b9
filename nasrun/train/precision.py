"""Precision and memory format of a run: ``precision=fp32|bf16|fp64`` and ``channels_last``.

Search and retrain run their forwards through :meth:`Numerics.autocast`: bf16 autocast on the run's
device, with BatchNorm fed fp32 (its statistics and variance need the mantissa) and the loss taken of
fp32 logits. The architecture estimators step out of it with :func:`full_precision`: a finite
difference of radius 1e-2 / ||v|| is far below bf16's resolution, so their second-order terms would be
rounding noise. With the defaults (fp32, no channels_last) every helper here returns its input
unchanged, so the computation is the one without this module.

``fp64`` is float64 everywhere, for checking that two computations of one trajectory agree to 1e-8 and
beyond (in fp32, rounding alone parts them by 1e-7 to 1e-6, relative): :meth:`Numerics.prepare` casts the model's
parameters and buffers (alphas and betas included) before the run builds its optimisers, so their states
are float64 too, and :meth:`Numerics.inputs` casts every batch; everything downstream (losses,
estimators, perturbations, the noise op, drop path) takes its dtype from those tensors. The random
draws are the fp32 run's, cast, so an fp64 run is the fp32 trajectory without its rounding.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ContextManager, Iterator, TypeVar

import torch
from torch import Tensor, nn

from nasrun.config.schema import PRECISIONS
from nasrun.errors import ConfigError

M = TypeVar("M", bound=nn.Module)

log = logging.getLogger(__name__)

#: Dtypes that :func:`upcast` turns into fp32 (others, fp64 included, pass through).
LOW = (torch.bfloat16, torch.float16)
#: Device types whose autocast :func:`full_precision` switches off.
AUTOCAST_DEVICES = ("cuda", "cpu")

_FULL: ContextVar[bool] = ContextVar("nasrun_full_precision", default=False)


def check_available(precision: str, device: torch.device) -> None:
    """A ConfigError line, at the start of a run, when the device cannot run ``precision``.

    fp64 on a CUDA GPU is allowed with a logged warning rather than refused: the run is correct, only slow
    (consumer and workstation GPUs compute float64 at 1/32 to 1/64 of their float32 rate, with no tensor
    cores for it; data-centre parts such as the A100 and H100 at about 1/2), and checking exactness on the
    device, with its own kernels, is worth a slow run.
    """
    if precision == "fp64" and device.type == "cuda":
        log.warning("precision=fp64 on %s: most GPUs run float64 at a small fraction of their float32 speed "
                    "(no tensor cores for it); expect a slow run", torch.cuda.get_device_name(device))
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision=bf16 is not allowed on {torch.cuda.get_device_name(device)}: the GPU has no "
                          "bf16 support; use precision=fp32")
    available = getattr(torch.amp, "is_autocast_available", None)  # torch >= 2.4
    if precision == "bf16" and available is not None and not available(device.type):
        raise ConfigError(f"precision=bf16 is not allowed on device={device}: torch has no autocast there; "
                          "use precision=fp32")


@contextmanager
def full_precision() -> Iterator[None]:
    """The model's own precision inside (fp32, or fp64 under ``precision=fp64``), whatever autocast the
    caller entered (also usable as ``@full_precision()``).

    Switches off torch's autocast on every device where it is on, and makes :meth:`Numerics.autocast`
    a no-op, so an :class:`~nasrun.methods.objective.ArchObjective` called inside stays fp32 (fp64).
    """
    token = _FULL.set(True)
    try:
        with ExitStack() as stack:
            for kind in AUTOCAST_DEVICES:
                if torch.is_autocast_enabled(kind):
                    stack.enter_context(torch.autocast(kind, enabled=False))
            yield
    finally:
        _FULL.reset(token)


def upcast(t: Tensor) -> Tensor:
    """A bf16/fp16 tensor as fp32 (the loss is taken of fp32 logits); any other tensor (fp64 too) as it is."""
    return t.float() if t.dtype in LOW else t


def _fp32_input(module: nn.Module, args: tuple) -> tuple:
    """A forward pre-hook of BatchNorm: its input in fp32, so it normalises (and keeps statistics) in fp32."""
    return (upcast(args[0]), *args[1:]) if args and isinstance(args[0], Tensor) else args


def keep_norms_fp32(model: M) -> M:
    """Make every BatchNorm of ``model`` take fp32 input; idempotent, so it may run again after BN modules
    are replaced (e.g. by SyncBatchNorm)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not getattr(module, "_nasrun_fp32", False):
            module.register_forward_pre_hook(_fp32_input)
            module._nasrun_fp32 = True
    return model


@dataclass(frozen=True)
class Numerics:
    """How a run computes: ``precision`` (fp32 | bf16 | fp64) and the ``channels_last`` memory format."""

    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is not allowed: one of {', '.join(PRECISIONS)}")

    @classmethod
    def of(cls, cfg: Any) -> "Numerics":
        """The run's settings from a :class:`~nasrun.config.schema.NasrunConf`."""
        return cls(cfg.precision, cfg.channels_last)

    def autocast(self, device: torch.device | str) -> ContextManager[Any]:
        """bf16 autocast on ``device``'s type; nothing for fp32, fp64 or inside :func:`full_precision`."""
        if self.precision != "bf16" or _FULL.get():
            return nullcontext()
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)

    def inputs(self, x: Tensor) -> Tensor:
        """A batch of images in the run's memory format, as float64 under fp64 (the loaders give float32)."""
        if self.precision == "fp64" and x.is_floating_point():
            x = x.to(torch.float64)
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, model: M) -> M:
        """The model for this run: float64 parameters and buffers under fp64, channels_last weights, BatchNorm
        in fp32 under bf16 (in place; idempotent). Call it before building optimisers over the parameters:
        their states then take the parameters' dtype."""
        if self.precision == "fp64":
            model.to(torch.float64)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.precision == "bf16":
            keep_norms_fp32(model)
        return model

    def record(self) -> dict[str, Any]:
        """What result.json says about them."""
        return {"precision": self.precision, "channels_last": self.channels_last}


#: The defaults: fp32, the contiguous layout (every helper a no-op).
FP32 = Numerics()

__all__ = ["FP32", "LOW", "Numerics", "check_available", "full_precision", "keep_norms_fp32", "upcast"]
