"""AdamW with layer-wise lr decay, as the SparK authors fine-tune Mask R-CNN: pretrained layers move less.

Layers count up from the input: stem 0, res2 1, res3 2, res4 ``3 + block // 3`` (the deep stage spans several
layers), res5 N, and everything above the backbone (FPN, RPN, ROI heads) N + 1, where
N = 4 + (res4 blocks - 1) // 3 (5 for ResNet-50). A parameter trains at ``base_lr * decay ** (N + 1 - layer)``:
heads at the base lr, the stem smallest. The timm backbone maps its four stages the same way.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.modeling.meta_arch import GeneralizedRCNN
from detectron2.solver.build import reduce_param_groups
from torch import nn

from eval.detection.backbone import stage_modules

BOTTOM_UP = "backbone.bottom_up."
# Norm weights get their own weight decay (Detectron2's WEIGHT_DECAY_NORM); FrozenBN has no parameters.
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def block_index(name: str) -> int:
    """The block a parameter sits in, from its name inside a stage: ``3.conv1.weight`` (ResNet) or
    ``blocks.3.conv_dw.weight`` (ConvNeXt); 0 for stage-level modules such as ConvNeXt's ``downsample``."""
    match = re.match(r"(?:blocks\.)?(\d+)\.", name)
    return int(match[1]) if match else 0


def num_layers(res4_blocks: int) -> int:
    """N, the layer id of res5: res4 contributes one layer per three blocks."""
    return 4 + (res4_blocks - 1) // 3


def layer_id(name: str, stages: Sequence[str], n: int) -> int:
    """Layer id of detector parameter ``name``; ``stages`` are the four stage module paths inside bottom_up."""
    if not name.startswith(BOTTOM_UP):
        return n + 1
    name = name[len(BOTTOM_UP):]
    for stage, path in enumerate(stages):
        if name.startswith(path + "."):
            return (1, 2, 3 + block_index(name[len(path) + 1:]) // 3, n)[stage]
    return 0


def layer_decay_param_groups(
    model: GeneralizedRCNN, base_lr: float, weight_decay: float, weight_decay_norm: float, decay: float,
    decay_1d: bool = True,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with per-layer lr and norm-specific weight decay (merged where equal); without
    ``decay_1d`` no 1-D parameter (bias, layer scale) decays either, as in MMDetection's ConvNeXt recipe."""
    bottom_up = model.backbone.bottom_up
    stages = stage_modules(bottom_up)
    res4 = stages[2] + "."
    res4_blocks = 1 + max(block_index(k[len(res4):]) for k, _ in bottom_up.named_parameters() if k.startswith(res4))
    n = num_layers(res4_blocks)
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}

    def decay_of(param: nn.Parameter) -> float:
        if id(param) in norm_params:
            return weight_decay_norm
        return weight_decay if decay_1d or param.ndim > 1 else 0.0

    groups = [
        {
            "params": [param],
            "lr": base_lr * decay ** (n + 1 - layer_id(name, stages, n)),
            "weight_decay": decay_of(param),
        }
        for name, param in model.named_parameters()
        if param.requires_grad
    ]
    return reduce_param_groups(groups)


def build_optimizer(cfg: CfgNode, model: GeneralizedRCNN) -> torch.optim.AdamW:
    """AdamW over :func:`layer_decay_param_groups`, from ``cfg.SOLVER``."""
    groups = layer_decay_param_groups(model, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY,
                                      cfg.SOLVER.WEIGHT_DECAY_NORM, cfg.SOLVER.LAYER_DECAY, cfg.SOLVER.DECAY_1D)
    return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
