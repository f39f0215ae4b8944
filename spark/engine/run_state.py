"""The resumable state of a run: ``checkpoint.pth`` in the run directory, replaced atomically.

A run re-started with the same command finds this file and continues after its last completed epoch. It holds
only tensors and plain containers, so it loads with ``weights_only=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from spark.io import load_torch, save_torch

from .loop import NonFiniteError

CHECKPOINT_NAME = "checkpoint.pth"


def checkpoint_due(epoch: int, epochs: int, every: int) -> bool:
    """Whether to save after (1-based) ``epoch``: every ``every`` epochs and always after the last one."""
    return epoch % every == 0 or epoch == epochs


def save_state(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to the run's checkpoint, refusing non-finite tensors so the last good one survives."""
    for key, tensor in _tensors(state, ""):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NonFiniteError(f"not saving {CHECKPOINT_NAME}: {key} has non-finite values")
    path = Path(run_dir) / CHECKPOINT_NAME
    save_torch(state, path)
    return path


def load_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's checkpoint (weights only), or None for a fresh run."""
    path = Path(run_dir) / CHECKPOINT_NAME
    return load_torch(path) if path.is_file() else None


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}[{i}]")
