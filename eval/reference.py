"""Published numbers for the tables' reference columns and the claims table, each with its source.

A cell we could not source stays empty ("—"); the report lists :data:`SOURCES` so a reader can check every one.
"""
from __future__ import annotations

SOURCES = {
    "spark-readme": "SparK official repository README (keyu-tian/SparK), ImageNet-1K fine-tuning after 1600-epoch "
                    "pretraining",
    "mmpretrain": "OpenMMLab mmpretrain SparK reproduction (800-epoch pretraining, 300-epoch fine-tuning)",
    "dreamteacher": "DreamTeacher (arXiv 2307.07487) Table 2, reprinting SparK's COCO Mask R-CNN R50-FPN table "
                    "(Detectron2, 1x = 90k iterations); every cell matches an image of SparK's own table",
    "spark-paper-text": "SparK paper (arXiv 2301.03580), text: supervised baselines R50 79.8, ConvNeXt-S 83.1, "
                        "ConvNeXt-B 83.8; abstract: up to +3.5 on COCO; ablations: zero-outing, single-scale and "
                        "loss on all patches each hurt",
    "spark-paper-image": "SparK paper, tables read from an image only (cite with that caveat): supervised R101 81.3, "
                         "R152 81.8, R200 82.1, ConvNeXt-L 84.3; COCO ConvNeXt-B (mmdet 3x) supervised 47.7/43.2, "
                         "SparK 51.2/45.1",
    "spark-ablation-crop": "A crop of the paper's ablation table with its OCR in a public blog post (1600-epoch "
                           "pretraining, most likely ConvNeXt-S): SparK 84.1, zero-outing 83.2, not pretrained 83.1",
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

# The supervised baselines of the paper's scaling table (ImageNet-1K top-1, %): the "scratch" row's reference.
SUPERVISED_TOP1 = {
    "resnet50": (79.8, "spark-paper-text"),
    "convnext_small": (83.1, "spark-paper-text"),
    "convnext_base": (83.8, "spark-paper-text"),
    "resnet101": (81.3, "spark-paper-image"),
    "resnet152": (81.8, "spark-paper-image"),
    "resnet200": (82.1, "spark-paper-image"),
    "convnext_large": (84.3, "spark-paper-image"),
}

# COCO Mask R-CNN (AP^bb, AP^mk, source) by (timm architecture, init, schedule): SparK vs the supervised backbone,
# each beside runs of its own schedule only (eval/detection/recipes.py: paper_schedule).
COCO_AP = {
    ("resnet50", "SparK", "1x"): (41.6, 37.7, "dreamteacher"),
    ("resnet50", "supervised", "1x"): (38.9, 35.4, "dreamteacher"),
    ("convnext_base", "SparK", "3x"): (51.2, 45.1, "spark-paper-image"),
    ("convnext_base", "supervised", "3x"): (47.7, 43.2, "spark-paper-image"),
}

# Ablation rows: ImageNet top-1 difference to full SparK (variant - SparK, points, all labels) by (timm architecture,
# variant): the rows are ConvNeXt-S's (SparK 84.1 and not pretrained 83.1 are its numbers).
ABLATION_TOP1_DELTA = {
    ("convnext_small", "zero_out"): (-0.9, "spark-ablation-crop"),
}

# What the paper shows for each claim the report tests (the difference in the paper's direction, with sources).
CLAIM_EVIDENCE = {
    "classification": "ImageNet top-1 R50: SparK 80.6 vs 79.8 supervised from scratch (+0.8) [spark-readme, "
                      "spark-paper-text]; SparK 84.1 vs 83.1 not pretrained (+1.0) [spark-ablation-crop]",
    "low-label": "— (no low-label experiment in the paper)",
    "classification supervised": "— (no such classification experiment; the paper's transfer from supervised ImageNet "
                                 "weights is COCO detection: SparK +2.7 AP^bb, R50-FPN 1x [dreamteacher])",
    "detection bbox": "COCO R50-FPN 1x AP^bb: SparK 41.6 vs supervised ImageNet 38.9 (+2.7) [dreamteacher]; "
                      "ConvNeXt-B 3x: SparK 51.2 vs supervised 47.7 (+3.5) [spark-paper-image]",
    "detection segm": "COCO R50-FPN 1x AP^mk: SparK 37.7 vs supervised ImageNet 35.4 (+2.3) [dreamteacher]; "
                      "ConvNeXt-B 3x: SparK 45.1 vs supervised 43.2 (+1.9) [spark-paper-image]",
    "detection scratch": "— (the paper has no from-scratch detection row; its COCO baseline is supervised "
                         "pretraining)",
}

# The motivation claims (zero-outing vs sparse encoding): the paper argues them with figures, without a number.
MOTIVATION_EVIDENCE = {
    "pixels": "figure only, no number: pixel-intensity histograms, zero-outing vs dropping the masked pixels "
              "[spark-paper-text]",
    "batch_norm": "text only, no number: zero-outing shifts the statistics BatchNorm sees [spark-paper-text]",
    "survival": "figure only, no number: binary masks through 3x3 convs, the holes fade under dense convolution "
                "[spark-paper-text]",
}

# Known ablation variants: (claim, the paper's evidence).
ABLATION_CLAIMS = {
    "zero_out": ("sparse > zero_out", "ConvNeXt-S: 84.1 vs 83.2 with zero-outing (+0.9) [spark-ablation-crop]"),
    "loss_all": ("masked-only loss > loss on all patches", "paper text: hurts, number not recovered "
                 "[spark-paper-text]"),
    "single_scale": ("hierarchical > single-scale", "paper text: hurts, number not recovered [spark-paper-text]"),
    "decoder_depth_1": ("decoder depth 2 > 1", "— (number not recovered)"),
    "decoder_depth_3": ("decoder depth 2 > 3", "— (number not recovered)"),
}
