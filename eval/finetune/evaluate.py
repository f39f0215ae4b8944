"""Top-k accuracy over a validation set sharded across ranks (every image counted exactly once, see
:func:`spark.engine.data.eval_loader`).

Generic: nothing here knows about fine-tuning recipes, so it can move to :mod:`spark.engine` as is.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from spark.engine import DistEnv, Precision, all_reduce_mean, all_reduce_sum


@torch.no_grad()
def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BN running statistics) over ranks, in place; a no-op in one process.

    Without SyncBatchNorm (DDP on CPU) each rank's statistics come from its own batches, so ranks would evaluate
    (and checkpoint) different models; with it, they are equal already.
    """
    for buffer in model.buffers():
        if buffer.is_floating_point():
            all_reduce_mean(buffer)


@torch.no_grad()
def topk_accuracy(model: nn.Module, loader: DataLoader, env: DistEnv, precision: Precision,
                  ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": %, "top5": %}`` of ``model`` in eval mode over all ranks' shards (k capped at the class
    count). Every rank must call it. The model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(len(ks) + 1, dtype=torch.float64, device=env.device)  # correct@k..., images
    for images, targets in loader:
        images, targets = precision.prepare_input(images, env.device), targets.to(env.device, non_blocking=True)
        with precision.autocast(env.device):
            logits = model(images)
        ranked = logits.topk(min(max(ks), logits.shape[-1]), dim=-1).indices
        hits = ranked.eq(targets[:, None])
        for i, k in enumerate(ks):
            counts[i] += hits[:, :k].any(dim=-1).sum()
        counts[-1] += len(targets)
    model.train(was_training)
    counts = all_reduce_sum(counts)
    total = counts[-1].item()
    return {f"top{k}": 100.0 * counts[i].item() / max(total, 1) for i, k in enumerate(ks)}
