"""The timm-wrapped Detectron2 backbone: any timm convnet (here ResNet-18 and ConvNeXt-atto) under FPN + Mask R-CNN."""
from __future__ import annotations

import pytest

from helpers import detection_config, require

require("detectron2")
pytestmark = pytest.mark.detectron2

import timm  # noqa: E402
import torch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from eval.detection.backbone import TimmBackbone, stage_modules  # noqa: E402
from eval.detection.recipe import build_cfg  # noqa: E402


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto"])
def test_timm_backbone_builds_and_runs_mask_rcnn_on_cpu(arch, tmp_path):
    config = detection_config(arch=arch, backbone="timm", min_size_test=64, max_size_test=96, proposals_test=100)
    cfg = build_cfg(config, 3, tmp_path)
    model = build_model(cfg).eval()
    bottom_up = model.backbone.bottom_up
    assert isinstance(bottom_up, TimmBackbone)
    info = timm.create_model(arch, features_only=True, out_indices=4).feature_info
    shapes = bottom_up.output_shape()
    assert list(shapes) == ["res2", "res3", "res4", "res5"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    assert [s.channels for s in shapes.values()] == info.channels()

    features = model.backbone(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape[-2:]) for k, v in features.items()} == {
        "p2": (16, 24), "p3": (8, 12), "p4": (4, 6), "p5": (2, 3), "p6": (1, 2)}
    with torch.no_grad():
        (output,) = model([{"image": torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8), "height": 64, "width": 96}])
    instances = output["instances"]
    assert instances.image_size == (64, 96)
    assert instances.pred_masks.shape[1:] == (64, 96)


def test_stage_modules_name_the_four_stages(tmp_path):
    cfg = build_cfg(detection_config(arch="convnext_atto", backbone="timm"), 3, tmp_path)
    assert stage_modules(build_model(cfg).backbone.bottom_up) == [f"body.model.stages.{i}" for i in range(4)]
    cfg = build_cfg(detection_config(arch="resnet18"), 3, tmp_path)
    assert stage_modules(build_model(cfg).backbone.bottom_up) == ["res2", "res3", "res4", "res5"]


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0", "regnetx_002"])
def test_syncbn_backbone_equals_the_bn_one_in_eval_mode(arch):
    """EfficientNet and RegNet fuse BN and activation (timm's BatchNormAct2d): a converter that turns them into a
    plain SyncBatchNorm drops the activation, and the converted backbone computes something else."""
    torch.manual_seed(0)
    plain = TimmBackbone(arch, norm="BN").eval()
    for m in plain.modules():  # non-trivial statistics, so a dropped or misplaced BN shows
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    synced = TimmBackbone(arch, norm="SyncBN").eval()
    synced.load_state_dict(plain.state_dict())
    norms = [m for m in synced.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, actual = plain(x), synced(x)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6)


def test_unsupported_models_fail_clearly():
    with pytest.raises(ValueError, match="norm must be one of"):
        TimmBackbone("resnet18", norm="GN")
