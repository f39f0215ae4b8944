"""This process's place in the job: the torchrun process group (NCCL on CUDA, gloo on CPU, a plain single process
otherwise), DDP and collectives, and the process's host memory.

Code takes a :class:`DistEnv` instead of querying ``torch.distributed`` everywhere, so the same loop runs under
``python -m`` and under ``torchrun --nproc_per_node N``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from spark.config import ConfigError

logger = logging.getLogger(__name__)

# How long a collective waits for the slowest rank. torch's default (10 min for NCCL) is shorter than the first step
# of 8 ranks that each compile the model (inductor, one CPU core per rank) while the fastest waits in all-reduce.
DEFAULT_TIMEOUT_MINUTES = 60


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job and the device it computes on."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and logs; the other ranks only compute."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


@contextmanager
def distributed_env(timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> Iterator[DistEnv]:
    """Join the process group described by torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (if any) for the
    duration of the block; the device is ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.

    ``timeout_minutes`` bounds how long a collective waits for the slowest rank before the job fails."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns_group = world_size > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size,
                                timeout=timedelta(minutes=timeout_minutes))
    try:
        yield DistEnv(rank, local_rank, world_size, device)
    finally:
        if owns_group:
            dist.destroy_process_group()


def require_gpus(key: str, asked: int) -> None:
    """Stop before any work when a job asks for ``asked`` GPUs (``key`` names the setting) and this process sees
    fewer: without it, a GPU job scheduled on a node without (visible) GPUs would train on the CPU in silence."""
    if asked <= 0:
        return
    found = torch.cuda.device_count()
    if found >= asked:
        return
    if torch.version.cuda is None:
        why = f"torch {torch.__version__} is built without CUDA"
    elif found == 0:
        why = f"no CUDA device is visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
    else:
        why = f"only {found} CUDA device(s) visible"
    raise ConfigError(f"params: {key}: {asked} GPU(s) asked for, found {found}: {why}")


def wrap_ddp(model: nn.Module, env: DistEnv) -> nn.Module:
    """``model`` under DistributedDataParallel when the job has several ranks, unchanged otherwise."""
    if not env.is_distributed:
        return model
    return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside any ``torch.compile`` and DistributedDataParallel wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Average ``tensor`` in place over all ranks (a no-op in a single process); returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def barrier() -> None:
    """Wait until every rank gets here (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` in place over all ranks (a no-op in a single process); returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor



def gather_shards(shard: Tensor, total: int) -> Tensor:
    """The rows of every rank's :func:`~spark.engine.data.eval_loader` shard (rank ``r`` holds rows ``r, r +
    world_size, ...`` of ``total``), in the dataset's order, on every rank (``shard`` itself in a single process).
    Shards differ by at most one row; they are padded to the same length for the collective and trimmed after."""
    if not (dist.is_available() and dist.is_initialized()):
        return shard
    world_size = dist.get_world_size()
    padded = shard.new_zeros(-(-total // world_size), *shard.shape[1:])
    padded[:len(shard)] = shard
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.stack(parts, dim=1).flatten(0, 1)[:total]  # row i of rank r is row i * world_size + r

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1  # -1: the heap is never trimmed
M_MMAP_MAX = -4  # 0: no block is served by mmap


def retain_freed_memory() -> bool:
    """Make glibc's malloc serve all blocks from its heap and never return freed ones to the kernel.

    A CPU training step allocates and frees the same large blocks (activations, gradients) every step. By default
    glibc serves them with ``mmap`` and unmaps them on free, so each step's blocks are fresh pages the kernel zeroes
    on first touch; kept in the heap, they are reused, and the process keeps the high-water mark it reaches every
    step anyway (what the jemalloc/tcmalloc ``LD_PRELOAD`` of PyTorch's CPU tuning guides buys). For CPU training
    only: a GPU job's large buffers live on the device, and its loader workers would keep their batches' peak.

    Applies to the calling process and to the processes it forks (data loader workers). Returns False, changing
    nothing, where the C library is not glibc (macOS, musl, Windows).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, -1)):
        return False
    logger.debug("glibc malloc: no mmap, no trimming (freed host memory is reused by the next step)")
    return True
