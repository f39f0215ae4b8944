"""Layer-wise lr decay for Mask R-CNN: the authors' layer ids, and both ResNet backbones getting the same lrs."""
from __future__ import annotations

import pytest

from helpers import detection_config, require

require("detectron2")
pytestmark = pytest.mark.detectron2

from detectron2.modeling import build_model  # noqa: E402

from eval.detection.convert import timm_resnet_to_detectron2  # noqa: E402
from eval.detection.optim import build_optimizer, layer_decay_param_groups, layer_id  # noqa: E402
from eval.detection.recipe import build_cfg  # noqa: E402

R50 = ["res2", "res3", "res4", "res5"]


@pytest.mark.parametrize(("name", "layer"), [
    ("backbone.bottom_up.stem.conv1.weight", 0),
    ("backbone.bottom_up.stem.conv1.norm.bias", 0),
    ("backbone.bottom_up.res2.2.conv3.weight", 1),
    ("backbone.bottom_up.res3.3.shortcut.norm.weight", 2),
    ("backbone.bottom_up.res4.0.conv1.weight", 3),
    ("backbone.bottom_up.res4.2.conv2.weight", 3),
    ("backbone.bottom_up.res4.3.conv1.weight", 4),
    ("backbone.bottom_up.res4.5.conv3.norm.weight", 4),
    ("backbone.bottom_up.res5.0.conv1.weight", 5),
    ("backbone.fpn_lateral2.weight", 6),
    ("roi_heads.mask_head.predictor.weight", 6),
    ("proposal_generator.rpn_head.conv.weight", 6),
])
def test_resnet50_layer_ids(name, layer):
    assert layer_id(name, R50, n=5) == layer


def lrs(arch: str, backbone: str, tmp_path) -> dict[str, float]:
    cfg = build_cfg(detection_config(arch=arch, backbone=backbone), 10, tmp_path)
    model = build_model(cfg)
    lr_of = {id(p): g["lr"] for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    return {name: lr_of[id(p)] for name, p in model.named_parameters()}


def test_resnet50_lr_scales(tmp_path):
    lr = lrs("resnet50", "resnet", tmp_path)
    base = 2.5e-4
    assert lr["backbone.bottom_up.stem.conv1.weight"] == pytest.approx(base * 0.6**6)
    assert lr["backbone.bottom_up.res4.5.conv1.weight"] == pytest.approx(base * 0.6**2)
    assert lr["backbone.bottom_up.res5.2.conv3.weight"] == pytest.approx(base * 0.6)
    assert lr["roi_heads.box_head.conv1.weight"] == pytest.approx(base)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_native_and_timm_backbones_get_the_same_lrs(arch, tmp_path):
    native, wrapped = lrs(arch, "resnet", tmp_path), lrs(arch, "timm", tmp_path)
    prefix = "backbone.bottom_up.body.model."
    timm_keys = {k[len(prefix):]: k for k in wrapped if k.startswith(prefix)}
    for native_key, timm_key in timm_resnet_to_detectron2(dict(zip(timm_keys, timm_keys))).items():
        native_key = "backbone.bottom_up." + native_key
        assert native[native_key] == pytest.approx(wrapped[timm_keys[timm_key]]), native_key
    above = {k for k in native if not k.startswith("backbone.bottom_up.")}
    assert above == {k for k in wrapped if not k.startswith("backbone.bottom_up.")}
    assert all(native[k] == wrapped[k] for k in above)


def test_convnext_stages_and_weight_decay(tmp_path):
    cfg = build_cfg(detection_config(arch="convnext_atto", backbone="timm"), 10, tmp_path)
    model = build_model(cfg)
    groups = layer_decay_param_groups(model, base_lr=1.0, weight_decay=0.1, weight_decay_norm=0.0, decay=0.5)
    hyper = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    body = "backbone.bottom_up.body.model."
    # convnext_atto: 6 blocks in stage 2 -> N = 5, so lr = 0.5 ** (6 - layer).
    expected = {
        "stem.0.weight": (0.5**6, 0.1), "stem.1.weight": (0.5**6, 0.0),  # stem conv, stem LayerNorm
        "stages.0.blocks.0.conv_dw.weight": (0.5**5, 0.1), "stages.1.downsample.1.weight": (0.5**4, 0.1),
        "stages.2.downsample.0.weight": (0.5**3, 0.0), "stages.2.blocks.2.mlp.fc1.weight": (0.5**3, 0.1),
        "stages.2.blocks.3.norm.weight": (0.5**2, 0.0), "stages.3.blocks.1.gamma": (0.5, 0.1),
    }
    for name, (lr, wd) in expected.items():
        assert hyper[id(params[body + name])] == pytest.approx((lr, wd)), name
    assert hyper[id(params["backbone.fpn_output5.weight"])] == (1.0, 0.1)
    # The ConvNeXt recipe (MMDetection's): no 1-D parameter decays, not the layer scales, not the biases either.
    groups = layer_decay_param_groups(model, base_lr=1.0, weight_decay=0.1, weight_decay_norm=0.0, decay=0.5,
                                      decay_1d=False)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert {decay[id(p)] for p in params.values() if p.ndim == 1} == {0.0}
    assert {decay[id(p)] for p in params.values() if p.ndim > 1} == {0.1}
    assert hyper[id(params["roi_heads.box_predictor.cls_score.bias"])] == (1.0, 0.1)  # the ResNet recipe decays them
