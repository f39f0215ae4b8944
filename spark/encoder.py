"""The encoder: an unmodified timm convnet and the feature scales SparK decodes from.

timm describes a backbone's hierarchy in ``feature_info`` and returns those maps from ``forward_intermediates``,
so no architecture's forward is rewritten. The head is pruned: only the trunk is pretrained, and its state_dict
keeps plain timm names.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import timm
import torch
from torch import nn

MAX_SCALES = 4


@dataclass(frozen=True)
class Scales:
    """The feature maps fed to the decoder, finest first: ``forward_intermediates`` indices, widths, strides."""

    indices: tuple[int, ...]
    channels: tuple[int, ...]
    reductions: tuple[int, ...]

    @property
    def downsample_ratio(self) -> int:
        return self.reductions[-1]


def select_scales(feature_info: list[dict]) -> Scales:
    """The deepest map of each stride, keeping the ``MAX_SCALES`` coarsest; strides must double.

    ResNet (strides 2, 4, 8, 16, 32) gives layer1..layer4; ConvNeXt gives its four stages.
    """
    deepest: dict[int, int] = {}
    for index, info in enumerate(feature_info):
        deepest[info["reduction"]] = index
    reductions = sorted(deepest)[-MAX_SCALES:]
    if any(fine * 2 != coarse for fine, coarse in zip(reductions, reductions[1:])):
        raise ValueError(f"encoder strides {reductions} do not halve in resolution from scale to scale")
    indices = tuple(deepest[r] for r in reductions)
    return Scales(indices, tuple(feature_info[i]["num_chs"] for i in indices), tuple(reductions))


def create_encoder(arch: str, drop_path_rate: float = 0.0, **timm_kwargs) -> tuple[nn.Module, Scales]:
    """Create ``arch`` from timm without its classifier head, and the scales SparK reads from it."""
    if not timm.is_model(arch):
        raise ValueError(f"unknown timm architecture '{arch}'")
    if drop_path_rate:
        timm_kwargs["drop_path_rate"] = drop_path_rate
    model = timm.create_model(arch, pretrained=False, **timm_kwargs)
    if not hasattr(model, "forward_intermediates"):
        raise ValueError(f"'{arch}' has no forward_intermediates in timm: SparK needs a hierarchical convnet")
    scales = select_scales(model.feature_info)
    model.prune_intermediate_layers(list(scales.indices), prune_head=True)
    return model, scales


def encoder_scales(arch: str, **timm_kwargs: Any) -> Scales:
    """The scales of ``arch`` without allocating it (built on the meta device, once per distinct hashable
    arguments)."""
    key = tuple(sorted(timm_kwargs.items()))
    try:
        hash(key)
    except TypeError:  # e.g. a list argument: not cacheable
        return _meta_scales.__wrapped__(arch, key)
    return _meta_scales(arch, key)


@functools.lru_cache(maxsize=None)
def _meta_scales(arch: str, timm_kwargs: tuple[tuple[str, Any], ...]) -> Scales:
    with torch.device("meta"):
        return create_encoder(arch, **dict(timm_kwargs))[1]


def head_keys(arch: str) -> set[str]:
    """State-dict keys of the full timm model that the pruned encoder lacks (its classifier head)."""
    with torch.device("meta"):
        full = timm.create_model(arch, pretrained=False)
        encoder, _ = create_encoder(arch)
    return set(full.state_dict()) - set(encoder.state_dict())


def uses_layer_norm(model: nn.Module) -> bool:
    """Whether the network normalises with LayerNorm rather than BatchNorm (ConvNeXt)."""
    kinds = {type(m) for m in model.modules()}
    has_ln = any(issubclass(k, nn.LayerNorm) for k in kinds)
    has_bn = any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
    return has_ln and not has_bn
