"""Per-iteration learning-rate and weight-decay schedules, stepped every optimizer update.

The SparK reference anneals both every iteration, not every epoch; fine-tuning uses the same shapes with other
end points, so the factors are arguments. Param groups may carry ``lr_scale`` (layer-wise decay) and
``weight_decay_scale`` (0 for groups exempt from decay); :func:`apply_lr_wd` honours both.
"""
from __future__ import annotations

import math

from torch.optim import Optimizer


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
