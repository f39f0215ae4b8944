"""One optimizer step: gradient accumulation over micro-batches, autocast, clipping and a non-finite guard; the
largest micro-batch that fits in memory (``micro_batch: auto``); and the lr and weight-decay schedules, stepped
every iteration as in the SparK reference.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from spark.errors import RunError

from .data import seeded
from .distributed import all_reduce_mean
from .precision import Precision

logger = logging.getLogger(__name__)

Batch = Tensor | Sequence[Tensor]
MEMORY_FRACTION = 0.9  # of the device's memory a micro-batch probe's peak may use


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


def fit_micro_batch(fits: Callable[[int], bool], batch: int) -> int:
    """The largest of ``batch``, ceil(batch / 2), ceil(batch / 4) ... 1 for which ``fits(size)``."""
    size = batch
    while not fits(size):
        if size == 1:
            raise RunError(f"micro_batch auto: even one sample per pass runs out of device memory (batch {batch})")
        size = -(-size // 2)
    return size


def probe_micro_batch(model: nn.Module, run_pass: Callable[[nn.Module, int], None], batch: int,
                      device: torch.device) -> int:
    """The micro-batch for this job: :func:`fit_micro_batch` over ``run_pass(model, size)`` (a forward and
    backward pass of ``size`` example samples), each rank alone, then the smallest over the ranks.

    At large batches a rank's share does not fit one pass; accumulating over micro-batches keeps the global batch,
    and so the recipe. A size fits when its pass neither runs out of memory nor, on CUDA, peaks above
    :data:`MEMORY_FRACTION` of the device (the optimizer's state and DDP's buckets come on top). Run before the
    model's norms synchronise and before DDP wraps it, so that no rank runs out of memory inside a collective, and
    without a trace: buffers (BN statistics) and random generators are restored, so ``auto`` trains exactly as the
    size it chose."""
    def fits(size: int) -> bool:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ran_out = False
        with _no_trace(model, device):
            try:
                run_pass(model, size)
            except torch.OutOfMemoryError:
                ran_out = True  # the error (and the frames holding activations) is released before the cache
            finally:
                model.zero_grad(set_to_none=True)
        peak = _release(device)
        total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
        verdict = "out of memory" if ran_out else (f"peak {peak / 2**30:.1f} of {total / 2**30:.1f} GiB"
                                                    if total else "ran")
        logger.info("micro_batch auto: %d per pass: %s", size, verdict)
        return not ran_out and (total is None or peak <= MEMORY_FRACTION * total)

    size = fit_micro_batch(fits, batch)
    if dist.is_available() and dist.is_initialized():
        smallest = torch.tensor([size], device=device)
        dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
        size = int(smallest.item())
    return size


@contextmanager
def _no_trace(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run a block in training mode, then restore the model's buffers and mode and every random generator."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    training = model.training
    model.train()
    with seeded(0), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
            model.train(training)


def _release(device: torch.device) -> int:
    """Free the probe's cached blocks; its peak memory (bytes) on CUDA, else 0."""
    if device.type != "cuda":
        return 0
    peak = torch.cuda.max_memory_allocated(device)
    torch.cuda.empty_cache()
    return peak


def warmup_cosine(it: int, peak: float, warmup_iters: int, total_iters: int,
                  start_factor: float = 0.005, end_factor: float = 0.001) -> float:
    """Linear warmup from ``start_factor * peak`` to ``peak`` over ``warmup_iters``, then cosine down to
    ``end_factor * peak`` at the last iteration (``total_iters - 1``)."""
    if it < warmup_iters:
        return peak * (start_factor + (1 - start_factor) * it / warmup_iters)
    progress = (it - warmup_iters) / max(total_iters - 1 - warmup_iters, 1)
    return peak * (end_factor + (1 - end_factor) * (0.5 + 0.5 * math.cos(math.pi * progress)))


def cosine(it: int, total_iters: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` at iteration 0 to ``end`` at the last iteration (the weight-decay schedule)."""
    progress = it / max(total_iters - 1, 1)
    return end + (start - end) * (0.5 + 0.5 * math.cos(math.pi * progress))


def apply_lr_wd(optimizer: Optimizer, lr: float, weight_decay: float) -> None:
    """Set every group's lr and weight decay, scaled by its ``lr_scale`` and ``weight_decay_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        group["weight_decay"] = weight_decay * group.get("weight_decay_scale", 1.0)
