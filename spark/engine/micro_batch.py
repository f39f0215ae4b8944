"""``micro_batch: auto``: the largest chunk of a rank's batch that one forward/backward pass fits in memory.

At the paper's batch sizes a rank's share (512 images at 4096 over 8 GPUs) does not fit an 80 GB GPU in one pass;
gradient accumulation over micro-batches keeps the global batch, and so the recipe. Before training, each rank
tries its whole share on examples shaped like its batches, and halves the chunk while the pass runs out of memory
(or, on CUDA, peaks above :data:`MEMORY_FRACTION` of the device: the optimizer's state and DDP's buckets come on
top). The ranks then train with the smallest size any of them found.

The probe runs each rank alone, on the model before its norms synchronise and before DDP wraps it: a rank that ran
out of memory inside a collective would leave the others waiting for it. It leaves no trace: the model's buffers
(BN running statistics) and every random generator are restored, so a run with ``auto`` trains exactly as one
given the size it chose.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from spark.errors import RunError

from .rng import seeded

logger = logging.getLogger(__name__)

MEMORY_FRACTION = 0.9  # of the device's memory a probe's peak may use


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
    backward pass of ``size`` example samples), each rank alone, then the smallest over the ranks."""
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
