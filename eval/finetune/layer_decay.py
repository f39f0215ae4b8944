"""Layer-wise lr decay as in the reference fine-tuning: parameter groups with ``lr_scale`` and
``weight_decay_scale`` for :func:`spark.engine.step.apply_lr_wd`.

Every parameter gets a layer id: 0 for the stem, growing with depth, the largest for the head; its lr scale is
``layer_decay ** (head_id - id)``, so the head trains at the full lr and the stem at the smallest. The grouping is
the authors' (their ``get_layer_id_and_scale_exp``), expressed on timm's module names:

- ResNet: stem 0, ``layer1`` 1, ``layer2`` and ``layer3`` in chunks of consecutive blocks (2 and 3 blocks for
  ResNet-50/101, 4 and 4 for ResNet-152/200; other depths use ResNet-50's chunks), ``layer4`` N, ``fc`` N + 1.
  ResNet-50 has 8 layers, so its stem's scale is 0.7^7.
- ConvNeXt: stem 0, stage 0 → 1, stage 1 (with its downsample) → 2, stage 2's downsample → 3 and its blocks in
  threes from 3, stage 3 (with its downsample) → N, head (final norm and fc) → N + 1. The authors set N = 12 for
  27 blocks in stage 2 (ConvNeXt-S/B/L) and 6 for 9 (ConvNeXt-T); N = 3 + ceil(blocks / 3) gives both and has no
  unused ids for other depths (ConvNeXt-atto: N = 5).

timm's own ``param_groups_layer_decay`` (via ``group_matcher``) gives every block its own layer instead: 18
layers for ResNet-50 (stem scale 0.7^17) and 38 for ConvNeXt-B (0.7^37), far steeper than the reference's 8 and
14, so it is not used. Biases and 1-D parameters (norms, ConvNeXt's layer scale) get no weight decay.
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Callable

import timm
import torch
from timm.models.convnext import ConvNeXt
from timm.models.resnet import ResNet
from torch import nn

# Blocks per lr-decay layer in layer2 and layer3, keyed by those stages' depths: the authors' choice per ResNet.
RESNET_CHUNKS = MappingProxyType({(4, 6): (2, 3), (4, 23): (2, 3), (8, 36): (4, 4), (24, 36): (4, 4)})
DEFAULT_RESNET_CHUNKS = RESNET_CHUNKS[(4, 6)]


def supports_layer_decay(arch: str) -> bool:
    """Whether ``arch`` builds a model :func:`layer_ids` knows (checked without allocating weights)."""
    with torch.device("meta"):
        return isinstance(timm.create_model(arch, pretrained=False), (ResNet, ConvNeXt))


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Each parameter's layer id (see the module docstring); the head's is the largest."""
    if isinstance(model, ResNet):
        layer_of = _resnet_layer(model)
    elif isinstance(model, ConvNeXt):
        layer_of = _convnext_layer(model)
    else:
        raise TypeError(f"layer-wise lr decay is defined for timm ResNet and ConvNeXt, not {type(model).__name__}")
    return {name: layer_of(name) for name, _ in model.named_parameters()}


def param_groups(model: nn.Module, layer_decay: float) -> list[dict[str, Any]]:
    """Named-parameter groups per (layer, decayed or not), with ``lr_scale`` and ``weight_decay_scale``.

    ``layer_decay == 1`` needs no layer ids (any architecture): one decayed and one exempt group.
    """
    ids = layer_ids(model) if layer_decay < 1 else {name: 0 for name, _ in model.named_parameters()}
    head = max(ids.values())
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim <= 1 or name.endswith(".bias")
        group = groups.setdefault((ids[name], exempt), {
            "params": [], "lr_scale": layer_decay ** (head - ids[name]), "weight_decay_scale": 0.0 if exempt else 1.0})
        group["params"].append((name, param))
    return list(groups.values())


def _resnet_layer(model: ResNet) -> Callable[[str], int]:
    chunk2, chunk3 = RESNET_CHUNKS.get((len(model.layer2), len(model.layer3)), DEFAULT_RESNET_CHUNKS)
    groups2, groups3 = math.ceil(len(model.layer2) / chunk2), math.ceil(len(model.layer3) / chunk3)
    last = 2 + groups2 + groups3  # layer4

    def layer_of(name: str) -> int:
        stage, _, rest = name.partition(".")
        if stage == "fc":
            return last + 1
        if not stage.startswith("layer"):
            return 0  # stem: conv1 (deep stems too), bn1
        block = int(rest.partition(".")[0])
        return {1: 1, 2: 2 + block // chunk2, 3: 2 + groups2 + block // chunk3, 4: last}[int(stage[5:])]

    return layer_of


def _convnext_layer(model: ConvNeXt) -> Callable[[str], int]:
    last = 3 + math.ceil(len(model.stages[2].blocks) / 3)  # stage 3

    def layer_of(name: str) -> int:
        parts = name.split(".")
        if parts[0] == "stem":
            return 0
        if parts[0] != "stages":
            return last + 1  # head (and norm_pre when it has weights)
        stage = int(parts[1])
        if stage in (0, 1):
            return stage + 1
        if stage == 3:
            return last
        return 3 + int(parts[3]) // 3 if parts[2] == "blocks" else 3  # stage 2: downsample, then blocks in threes

    return layer_of
