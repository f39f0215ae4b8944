"""The SparK authors' Detectron2 config, built from a :class:`DetectionConfig`.

Starts from the model zoo's ``COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml`` and applies what the authors
changed (their ``coco_R_50_FPN_CONV_1x_moco_adam.yaml``): BN everywhere a norm fits (SyncBN across processes),
4conv1fc box head, 4-conv mask head, no frozen stage, torchvision-style ResNet (stride in the 3x3), RGB input
with ImageNet statistics, AdamW + layer-wise lr decay, precise BN before testing. The schedule, optimizer and
training sizes are the config's recipe (:mod:`eval.detection.recipes`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

from eval.detection.backbone import build_timm_fpn_backbone
from eval.detection.config import RESNET_DEPTHS, DetectionConfig

BASE_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
TRAIN_DATASET, VAL_DATASET = "spark_detection_train", "spark_detection_val"
# ImageNet statistics in 0-255 RGB: what timm encoders (and SparK pretraining) normalise with.
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]


def add_spark_config(cfg: CfgNode) -> None:
    """The keys this project adds to Detectron2's config: the timm encoder, the lr decay, weight decay on 1-D
    parameters, and DETR's crop as an alternative to the plain resize."""
    cfg.MODEL.TIMM = CfgNode({"ARCH": "resnet50", "NORM": "BN", "DROP_PATH_RATE": 0.0})
    cfg.SOLVER.LAYER_DECAY = 1.0
    cfg.SOLVER.DECAY_1D = True
    cfg.INPUT.DETR_CROP = CfgNode({"PROB": 0.0, "RESIZE": (400, 500, 600), "SIZE": (384, 600)})


def train_mapper(cfg: CfgNode) -> DatasetMapper:
    """Detectron2's training mapper, with DETR's crop first for ``INPUT.DETR_CROP.PROB`` of the images (the
    ConvNeXt recipe's alternative: short side 400/500/600, then a random box of 384-600 px a side, then the
    multi-scale resize of every image); boxes are then recomputed from the cropped masks."""
    kwargs = DatasetMapper.from_config(cfg, is_train=True)
    crop = cfg.INPUT.DETR_CROP
    if crop.PROB > 0:
        detr = T.AugmentationList([T.ResizeShortestEdge(crop.RESIZE, cfg.INPUT.MAX_SIZE_TRAIN, "choice"),
                                   T.RandomCrop("absolute_range", crop.SIZE)])
        kwargs["augmentations"] = [T.RandomApply(detr, crop.PROB), *kwargs["augmentations"]]
        kwargs["recompute_boxes"] = cfg.MODEL.MASK_ON
    return DatasetMapper(**kwargs)


def build_cfg(config: DetectionConfig, num_classes: int, output_dir: str | Path, world_size: int = 1) -> CfgNode:
    """A frozen Detectron2 config for one run; ``world_size`` > 1 switches BN to SyncBN."""
    cfg = get_cfg()
    add_spark_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file(BASE_CONFIG))
    norm = "SyncBN" if world_size > 1 else "BN"

    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    cfg.MODEL.WEIGHTS = ""  # the encoder is loaded by eval.detection.convert, strictly
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = PIXEL_MEAN, PIXEL_STD
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    if config.backbone == "resnet":
        cfg.MODEL.RESNETS.DEPTH = RESNET_DEPTHS[config.arch]
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256 if RESNET_DEPTHS[config.arch] >= 50 else 64
        cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
        cfg.MODEL.RESNETS.NORM = norm
    else:
        cfg.MODEL.BACKBONE.NAME = build_timm_fpn_backbone.__name__
        cfg.MODEL.TIMM.ARCH = config.arch
        cfg.MODEL.TIMM.NORM = norm
        cfg.MODEL.TIMM.DROP_PATH_RATE = config.drop_path_rate
    cfg.MODEL.FPN.NORM = norm
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 4, 1
    cfg.MODEL.ROI_BOX_HEAD.NORM = norm
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
    cfg.MODEL.ROI_MASK_HEAD.NORM = norm
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = config.roi_per_image
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = config.score_thresh_test
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = config.proposals_test
    cfg.TEST.DETECTIONS_PER_IMAGE = config.detections_per_image

    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MASK_FORMAT = config.mask_format
    cfg.INPUT.MIN_SIZE_TRAIN = tuple(config.min_size_train)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = config.max_size_train
    cfg.INPUT.DETR_CROP.PROB = config.crop_prob
    cfg.INPUT.MIN_SIZE_TEST = config.min_size_test
    cfg.INPUT.MAX_SIZE_TEST = config.max_size_test
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (TRAIN_DATASET,), (VAL_DATASET,)
    cfg.DATALOADER.NUM_WORKERS = config.num_workers

    cfg.SOLVER.IMS_PER_BATCH = config.batch_size
    cfg.SOLVER.BASE_LR = config.base_lr
    cfg.SOLVER.LAYER_DECAY = config.layer_decay
    cfg.SOLVER.WEIGHT_DECAY = config.weight_decay
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.DECAY_1D = config.decay_1d
    cfg.SOLVER.MAX_ITER = config.max_iter
    cfg.SOLVER.STEPS = tuple(config.steps)
    cfg.SOLVER.GAMMA = config.gamma
    cfg.SOLVER.WARMUP_ITERS = config.warmup_iters
    cfg.SOLVER.WARMUP_FACTOR = config.warmup_factor
    cfg.SOLVER.CHECKPOINT_PERIOD = config.checkpoint_period
    cfg.TEST.EVAL_PERIOD = config.eval_period
    cfg.TEST.PRECISE_BN.ENABLED = config.precise_bn_iters > 0
    cfg.TEST.PRECISE_BN.NUM_ITER = config.precise_bn_iters
    cfg.SEED = config.seed
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.freeze()
    return cfg
