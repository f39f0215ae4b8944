"""The ``detection`` params section and the Detectron2 config built from it (the authors' COCO recipe)."""
from __future__ import annotations

import re

import pytest
from helpers import detection_config, require

from eval.detection.config import DetectionConfig
from spark.config import ConfigError

SMOKE = {
    "recipe": "resnet50", "data_root": "data/mini-coco", "train_json": "annotations/instances_train.json", "train_images": "train",
    "val_json": "annotations/instances_val.json", "val_images": "val", "arch": "resnet18",
    "min_size_train": [96, 128], "max_size_train": 160, "min_size_test": 128, "max_size_test": 160,
    "batch_size": 2, "max_iter": 10, "steps": [8], "warmup_iters": 2, "roi_per_image": 64,
    "score_thresh_test": 0.0, "precise_bn_iters": 2, "num_workers": 0,
}


def test_auto_recipe_is_the_one_named_like_arch_and_keys_override_it():
    resnet = DetectionConfig.parse({"detection": {}})
    assert (resnet.arch, resnet.recipe, resnet.max_iter, resnet.base_lr) == ("resnet50", "resnet50", 90_000, 2.5e-4)
    convnext = DetectionConfig.parse({"detection": {"arch": "convnext_base", "backbone": "timm", "max_iter": 300_000}})
    assert (convnext.recipe, convnext.max_iter, convnext.layer_decay, convnext.crop_prob) == (
        "convnext_base", 300_000, 0.65, 0.5)
    with pytest.raises(ConfigError, match=r"^params: detection\.recipe: no recipe is named like arch 'resnet18'"):
        DetectionConfig.parse({"detection": {"arch": "resnet18"}})
    with pytest.raises(ConfigError, match=r"^params: detection\.recipe: must be 'auto' or one of resnet50, "):
        DetectionConfig.parse({"detection": {"recipe": "2x"}})


def test_parse_section_coerces_lists_and_paths():
    config = DetectionConfig.parse({"detection": SMOKE})
    assert config.min_size_train == (96, 128) and config.steps == (8,)
    assert str(config.path(config.train_json)) == "data/mini-coco/annotations/instances_train.json"
    assert str(config.path("/abs/x.json")) == "/abs/x.json"


@pytest.mark.parametrize(("update", "message"), [
    ({"steps": [8, 12]}, "detection.steps: must increase strictly within (0, max_iter)"),
    ({"arch": "convnext_atto"}, "detection.arch: the resnet backbone supports"),
    ({"layer_decay": 0.0}, "detection.layer_decay: must be in (0, 1]"),
    ({"backbone": "vit"}, "detection.backbone: must be one of 'resnet', 'timm'"),
    ({"max_iters": 3}, "detection.max_iters: unknown key"),
])
def test_bad_values_name_the_key(update, message):
    with pytest.raises(ConfigError, match="^" + re.escape(f"params: {message}")):
        DetectionConfig.parse({"detection": {**SMOKE, **update}})


def test_recipe_mirrors_the_authors_config(tmp_path):
    require("detectron2")
    from eval.detection.recipe import PIXEL_MEAN, PIXEL_STD, build_cfg

    cfg = build_cfg(detection_config(), num_classes=80, output_dir=tmp_path)
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and cfg.MODEL.MASK_ON
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == 256
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert (cfg.MODEL.ROI_BOX_HEAD.NAME, cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC) == (
        "FastRCNNConvFCHead", 4, 1)
    assert cfg.MODEL.ROI_MASK_HEAD.NUM_CONV == 4
    norms = (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.ROI_BOX_HEAD.NORM, cfg.MODEL.ROI_MASK_HEAD.NORM)
    assert set(norms) == {"BN"}
    assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.PIXEL_MEAN == PIXEL_MEAN and cfg.MODEL.PIXEL_STD == PIXEL_STD
    assert cfg.INPUT.MIN_SIZE_TRAIN == tuple(range(480, 897, 32)) and cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice"
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.GAMMA) == (
        16, 90_000, (60_000, 80_000), 0.25)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.LAYER_DECAY, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WARMUP_ITERS) == (
        2.5e-4, 0.6, 1e-4, 1000)
    assert (cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.DECAY_1D, cfg.INPUT.DETR_CROP.PROB) == (0.01, True, 0.0)
    assert cfg.TEST.PRECISE_BN.ENABLED and cfg.MODEL.WEIGHTS == "" and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80


def test_recipe_uses_syncbn_across_processes_and_the_timm_backbone(tmp_path):
    require("detectron2")
    from eval.detection.recipe import build_cfg

    config = detection_config(arch="convnext_atto", backbone="timm", drop_path_rate=0.1)
    cfg = build_cfg(config, num_classes=10, output_dir=tmp_path, world_size=8)
    assert cfg.MODEL.BACKBONE.NAME == "build_timm_fpn_backbone"
    assert (cfg.MODEL.TIMM.ARCH, cfg.MODEL.TIMM.NORM, cfg.MODEL.TIMM.DROP_PATH_RATE) == ("convnext_atto", "SyncBN", 0.1)
    assert {cfg.MODEL.FPN.NORM, cfg.MODEL.ROI_BOX_HEAD.NORM, cfg.MODEL.ROI_MASK_HEAD.NORM} == {"SyncBN"}


def test_recipe_for_small_resnets(tmp_path):
    require("detectron2")
    from eval.detection.recipe import build_cfg

    cfg = build_cfg(DetectionConfig.parse({"detection": SMOKE}), 10, tmp_path)
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS) == (18, 64)
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.0 and cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 64


@pytest.mark.parametrize("crop_prob", [0.0, 1.0])
def test_detr_crop_changes_the_shape_before_the_multi_scale_resize(crop_prob, tmp_path):
    """A 64x256 image: resized alone it keeps its 1:4 shape; DETR's crop first (short side 400 -> 333x1333,
    then a box of 333 x 384-600) leaves at most 1:1.81 before the resize to a 96-px short side; the one box,
    recomputed from the cropped mask, stays inside the image."""
    require("detectron2")
    import numpy as np
    from detectron2.structures import BoxMode
    from PIL import Image

    from eval.detection.recipe import build_cfg, train_mapper

    Image.fromarray(np.full((64, 256, 3), 128, np.uint8)).save(tmp_path / "wide.png")
    whole = [0.0, 0.0, 256.0, 0.0, 256.0, 64.0, 0.0, 64.0]
    record = {"file_name": str(tmp_path / "wide.png"), "height": 64, "width": 256, "image_id": 0,
              "annotations": [{"bbox": [0, 0, 256, 64], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
                               "segmentation": [whole], "iscrowd": 0}]}
    cfg = build_cfg(detection_config(min_size_train=[96], max_size_train=1333, crop_prob=crop_prob), 1, tmp_path)
    mapper = train_mapper(cfg)
    for _ in range(5):
        mapped = mapper(dict(record))
        height, width = mapped["image"].shape[1:]
        assert min(height, width) == 96
        assert width / height == pytest.approx(4.0, abs=0.05) if crop_prob == 0 else width / height <= 600 / 333 + 0.02
        box = mapped["instances"].gt_boxes.tensor[0].tolist()
        assert 0 <= box[0] < box[2] <= width + 1e-3 and 0 <= box[1] < box[3] <= height + 1e-3
        assert box[2] - box[0] == pytest.approx(width, abs=1) and box[3] - box[1] == pytest.approx(height, abs=1)
