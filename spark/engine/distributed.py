"""Process groups as torchrun describes them: NCCL on CUDA, gloo on CPU, a plain single process otherwise.

Code takes a :class:`DistEnv` instead of querying ``torch.distributed`` everywhere, so the same loop runs under
``python -m`` and under ``torchrun --nproc_per_node N``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


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
def distributed_env() -> Iterator[DistEnv]:
    """Join the process group described by torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (if any) for the
    duration of the block; the device is ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns_group = world_size > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    try:
        yield DistEnv(rank, local_rank, world_size, device)
    finally:
        if owns_group:
            dist.destroy_process_group()


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


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` in place over all ranks (a no-op in a single process); returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
