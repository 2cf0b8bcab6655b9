"""What the search and the retraining loops share: the SGD step, the non-finite check, evaluation, progress."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrun.data import eval_batches
from nasrun.train.precision import FP32, Numerics, upcast


def apply_threads(threads: Optional[int]) -> None:
    """``threads``: torch's CPU threads for this run (None keeps torch's default, one per core).

    On a shared or small machine one thread is often much faster: the tiny convolutions of a CPU-sized
    supernet pay more for handing work between threads than they gain.
    """
    if threads is not None:
        torch.set_num_threads(threads)


def count(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``: what the console says."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


def checked(loss: Tensor, lr: float) -> float:
    """The loss as a number; raises NonFiniteLoss when it is NaN or infinite (the run cannot go on)."""
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLoss(f"training loss is {value} at lr {lr}")
    return value


def sgd_step(loss: Tensor, optimizer: torch.optim.Optimizer, params: Sequence[Tensor], grad_clip: Optional[float],
             lr: float, clear: Sequence[Tensor] = (), clip_also: Sequence[Tensor] = ()) -> float:
    """Backward, clip the global gradient norm of ``params`` (None: no clipping), step. ``clear``: tensors whose
    grad is dropped; ``clip_also``: tensors whose grad counts in the clip's norm, then is dropped."""
    optimizer.zero_grad(set_to_none=True)
    value = checked(loss, lr)
    loss.backward()
    for p in clear:
        p.grad = None
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([*params, *clip_also], grad_clip)
    for p in clip_also:
        p.grad = None
    optimizer.step()
    return value


def evaluate(model: nn.Module, data: Any, indices: Optional[Tensor], batch_size: int, mean: Sequence[float],
             std: Sequence[float], device: torch.device, numerics: Numerics = FP32) -> tuple[float, float]:
    """Loss and accuracy in eval mode over a fixed set of images (no augmentation)."""
    loss, acc, _ = evaluate_topk(model, data, indices, batch_size, mean, std, device, k=None, numerics=numerics)
    return loss, acc


@torch.no_grad()
def evaluate_topk(model: nn.Module, data: Any, indices: Optional[Tensor], batch_size: int, mean: Sequence[float],
                  std: Sequence[float], device: torch.device, k: Optional[int] = 5, numerics: Numerics = FP32,
                  mix: Optional[dict] = None, batch_stats: bool = False) -> tuple[float, float, Optional[float]]:
    """Loss, top-1 and top-k accuracy in eval mode over a fixed set of images (no augmentation).

    Top-1 is the argmax's accuracy (as :func:`evaluate`); top-k counts an image right when its label is
    among the k largest logits, with k capped at the number of classes (so top-5 of 4 classes is 1).
    ``k=None`` skips top-k (returned as None). The forward runs in ``numerics``' precision, the loss in fp32
    (fp64 under ``precision=fp64``). ``mix``: mixing weights for a supernet's forward (its own when None);
    ``batch_stats``: BatchNorm in train mode (batch statistics, running statistics updated), as DARTS-PT scores.
    """
    was_training = model.training
    model.train(batch_stats)
    loss_sum, correct, correct_k, n = 0.0, 0, 0, 0
    for x, y in eval_batches(data, indices, batch_size, mean, std, device):
        with numerics.autocast(device):
            out = model(numerics.inputs(x)) if mix is None else model(numerics.inputs(x), mix)
        logits = upcast(out[0] if isinstance(out, tuple) else out)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        if k is not None:
            correct_k += topk_correct(logits, y, k)
        n += len(y)
    model.train(was_training)
    return loss_sum / max(n, 1), correct / max(n, 1), None if k is None else correct_k / max(n, 1)


def topk_correct(logits: Tensor, y: Tensor, k: int) -> int:
    """How many rows of ``logits`` have their label ``y`` among their k largest values (k capped at the classes)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return int((top == y.unsqueeze(1)).any(dim=1).sum())


class Progress:
    """A rich progress bar on a terminal; nothing elsewhere (logs, CI, sweeps)."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True)
        if not bar.console.is_terminal:
            return
        self.bar, self.task = bar, bar.add_task(label, total=total)
        bar.start()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
