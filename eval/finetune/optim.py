"""The reference fine-tuning optimizers over layer-decay parameter groups. lr and weight decay are set every
iteration by :func:`spark.engine.step.apply_lr_wd` (the groups carry ``lr_scale`` and ``weight_decay_scale``)."""
from __future__ import annotations

from timm.optim import Lamb
from torch import nn
from torch.optim import AdamW, Optimizer

from .layer_decay import param_groups
from .recipes import OptimizerName


def build_optimizer(model: nn.Module, name: OptimizerName, lr: float, weight_decay: float,
                    layer_decay: float) -> Optimizer:
    """timm's LAMB as the reference configures it (trust ratio on every parameter, no bias correction, no
    internal clipping) or AdamW, both with default betas."""
    groups = param_groups(model, layer_decay)
    if name == "lamb":
        return Lamb(groups, lr=lr, weight_decay=weight_decay, bias_correction=False, always_adapt=True,
                    max_grad_norm=None)
    return AdamW(groups, lr=lr, weight_decay=weight_decay)
