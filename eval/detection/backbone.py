"""Any timm convnet as a Detectron2 FPN backbone, so encoders Detectron2 lacks (ConvNeXt) transfer like ResNets.

The encoder is ``timm.create_model(arch, features_only=True)`` with the ``getter`` feature class: it keeps the
model's own module names under ``body.model.``, so a SparK ``encoder.pth`` (plain timm names) loads unchanged.
Its four stride-4..32 maps are named ``res2``..``res5`` like Detectron2's ResNet, so ``MODEL.FPN.IN_FEATURES``
and the layer-wise lr decay read the same for both backbones.
"""
from __future__ import annotations

import math

import timm
import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import ResNet

STRIDES = (4, 8, 16, 32)
NORMS = ("BN", "SyncBN")


class TimmBackbone(Backbone):
    """The stride 4/8/16/32 feature maps of a timm model, as ``{"res2": ..., "res5": ...}``."""

    def __init__(self, arch: str, norm: str = "BN", drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"timm backbone norm must be one of {NORMS}, got {norm!r}")
        body = timm.create_model(
            arch, pretrained=False, features_only=True, feature_cls="getter", out_indices=len(STRIDES),
            drop_path_rate=drop_path_rate,
        )
        info = body.feature_info
        if tuple(info.reduction()) != STRIDES:
            raise ValueError(f"{arch}: last {len(STRIDES)} feature strides are {info.reduction()}, need {STRIDES}")
        # SyncBN only under DDP, as Detectron2 does for its own ResNet; LayerNorm models are unaffected.
        # timm's converter keeps the activation of fused norm-act layers (BatchNormAct2d); torch's would drop it.
        self.body = timm.layers.convert_sync_batchnorm(body) if norm == "SyncBN" else body
        self._out_features = [f"res{int(math.log2(s))}" for s in STRIDES]
        self._out_feature_strides = dict(zip(self._out_features, STRIDES))
        self._out_feature_channels = dict(zip(self._out_features, info.channels()))
        # Module path (relative to this backbone) of each stage, for the layer-wise lr decay.
        self.stage_modules = dict(zip(self._out_features, (f"body.model.{m}" for m in info.module_name())))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self._out_features, self.body(x)))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


def stage_modules(bottom_up: Backbone) -> list[str]:
    """Module paths of the four stages (stride 4 to 32) inside a bottom-up backbone, either kind."""
    if isinstance(bottom_up, TimmBackbone):
        return list(bottom_up.stage_modules.values())
    if isinstance(bottom_up, ResNet):
        return list(bottom_up.stage_names)
    raise TypeError(f"unsupported bottom-up backbone {type(bottom_up).__name__}")


@BACKBONE_REGISTRY.register()
def build_timm_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """``MODEL.TIMM.*`` encoder + Detectron2's FPN, wired exactly as ``build_resnet_fpn_backbone``."""
    if cfg.MODEL.BACKBONE.FREEZE_AT != 0:
        raise ValueError("the timm backbone trains all stages: MODEL.BACKBONE.FREEZE_AT must be 0")
    if input_shape.channels != 3:
        raise ValueError(f"the timm backbone takes RGB input, got {input_shape.channels} channels")
    bottom_up = TimmBackbone(cfg.MODEL.TIMM.ARCH, cfg.MODEL.TIMM.NORM, cfg.MODEL.TIMM.DROP_PATH_RATE)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
