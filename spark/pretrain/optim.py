"""LAMB as in the reference: two parameter groups, weight decay only on weights that are not 1-D, biases or
mask tokens. lr and weight decay are set every iteration by :mod:`spark.engine.step`."""
from __future__ import annotations

from typing import Any

from timm.optim import Lamb

from spark.model import SparK

from .config import PretrainConfig


def param_groups(model: SparK) -> list[dict[str, Any]]:
    """A decayed and an exempt group (``weight_decay_scale`` 1 and 0) of named parameters; the optimizer keeps
    the names (``param_names``), so its state dict says which tensor is which."""
    exempt = model.no_weight_decay()
    decay: list[tuple[str, Any]] = []
    no_decay: list[tuple[str, Any]] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            no_wd = param.ndim <= 1 or name.endswith(".bias") or name in exempt
            (no_decay if no_wd else decay).append((name, param))
    return [{"params": decay, "weight_decay_scale": 1.0}, {"params": no_decay, "weight_decay_scale": 0.0}]


def build_optimizer(model: SparK, config: PretrainConfig) -> Lamb:
    """timm's LAMB with the reference betas; gradients are clipped by the train step, not by LAMB."""
    return Lamb(param_groups(model), lr=config.peak_lr, betas=config.adam_betas, weight_decay=config.weight_decay,
                max_grad_norm=None)
