"""Published numbers for the tables' reference columns, each with its source. Cells without a source stay empty."""
from __future__ import annotations

SOURCES = {
    "spark-readme": "SparK official repository README (keyu-tian/SparK), ImageNet-1K fine-tuning after 1600-epoch pretraining",
    "mmpretrain": "OpenMMLab mmpretrain SparK reproduction (800-epoch pretraining, 300-epoch fine-tuning)",
}

# ImageNet-1K top-1 (%) after SparK pretraining + fine-tuning, 224 px, by timm architecture.
IMAGENET_TOP1 = {
    "resnet50": (80.6, "spark-readme"),
    "resnet101": (82.2, "spark-readme"),
    "resnet152": (82.7, "spark-readme"),
    "resnet200": (83.1, "spark-readme"),
    "convnext_small": (84.1, "spark-readme"),
    "convnext_base": (84.8, "spark-readme"),
    "convnext_large": (85.4, "spark-readme"),
}

# COCO Mask R-CNN AP and the ablation table's numbers were not available to us: no reference cells.
COCO_AP: dict[str, tuple[float, str]] = {}
ABLATION_TOP1: dict[str, tuple[float, str]] = {}
