"""One optimizer update: gradient accumulation over micro-batches, autocast, clipping and a non-finite guard."""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from spark.errors import RunError

from .distributed import all_reduce_mean
from .precision import Precision

Batch = Tensor | Sequence[Tensor]


class NonFiniteError(RunError, FloatingPointError):
    """The loss or the gradient norm became NaN/inf; raised before the optimizer step, so nothing was updated."""


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over the global batch (all ranks)
    grad_norm: float  # total gradient norm before clipping


def train_step(loss_fn: Callable[[Any], Tensor], optimizer: Optimizer, batch: Batch, *, where: str,
               module: nn.Module | None = None, micro_batch: int | None = None, clip: float | None = None,
               precision: Precision = Precision()) -> StepResult:
    """Forward/backward ``batch`` in micro-batches of at most ``micro_batch`` samples, then clip and step.

    ``loss_fn(micro)`` returns the mean loss of a micro-batch (a tensor, or a tuple of tensors split alike).
    Losses are weighted by micro-batch size, so the gradient equals that of the whole batch for losses that are
    means over samples. ``module`` is what ``loss_fn`` runs (plain, compiled or under DDP): under DDP its
    ``no_sync`` makes gradients synchronise once, on the last micro-batch. ``where`` (e.g. "epoch 3/10, iteration
    7/50") goes into the :class:`NonFiniteError` message.
    """
    chunks = _split(batch, micro_batch)
    total = sum(_length(c) for c in chunks)
    device = _first_tensor(batch).device
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    for i, chunk in enumerate(chunks):
        sync = i == len(chunks) - 1 or not hasattr(module, "no_sync")
        with nullcontext() if sync else module.no_sync():
            with precision.autocast(device):
                loss = loss_fn(chunk) * (_length(chunk) / total)
            loss.backward()
        loss_sum += loss.detach().float()
    loss_value = all_reduce_mean(loss_sum).item()
    if not math.isfinite(loss_value):
        raise NonFiniteError(f"loss is {loss_value} at {where}; stopping before the optimizer step")
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = nn.utils.clip_grad_norm_(params, clip if clip else math.inf).item()
    if not math.isfinite(grad_norm):
        raise NonFiniteError(f"gradient norm is {grad_norm} at {where}; stopping before the optimizer step")
    optimizer.step()
    return StepResult(loss_value, grad_norm)


def _split(batch: Batch, size: int | None) -> list[Batch]:
    if isinstance(batch, Tensor):
        return list(batch.split(size)) if size else [batch]
    return [tuple(chunk) for chunk in zip(*(t.split(size) if size else (t,) for t in batch))]


def _length(batch: Batch) -> int:
    return len(_first_tensor(batch))


def _first_tensor(batch: Batch) -> Tensor:
    return batch if isinstance(batch, Tensor) else batch[0]
