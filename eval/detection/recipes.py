"""The authors' COCO Mask R-CNN recipes, one per backbone, in Detectron2 terms.

ResNets: their Detectron2 config (``downstream_d2/configs/coco_R_50_FPN_CONV_1x_moco_adam.yaml``, the 1x
schedule of the R50-FPN table). ConvNeXt-B: their MMDetection config
(``mask_rcnn_convnext_base_patch4_window7_mstrain_480-800_adamw_3x_coco_in1k.py``, the 3x schedule behind 51.2 /
45.1), with its epochs expressed in iterations: at batch 16 an epoch of COCO train2017 is its 117,266 images with
annotations (what both libraries train on) / 16 = 7,330 iterations, rounded up, so 36 epochs are 263,880 iterations
and the steps at epochs 27 and 33 fall at 197,910 and 241,890; MMDetection's linear warmup is 500 iterations from
0.001. A recipe fills every recipe key that the ``detection`` section does not set itself (as the fine-tuning
recipes do).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

COCO_TRAIN_IMAGES = 117_266  # train2017 images with at least one annotation
EPOCH_ITERATIONS = -(-COCO_TRAIN_IMAGES // 16)  # 7,330 at batch 16


@dataclass(frozen=True)
class DetectionRecipe:
    """One schedule and optimizer; ``batch_size`` is the total over all processes. ``crop_prob`` is the share of
    images that take DETR's crop first (short side 400/500/600, then a random 384-600 px box) before the
    multi-scale resize; ``decay_1d`` says whether biases and other 1-D parameters besides norms (ConvNeXt's
    layer scales) get weight decay (norms never do)."""

    batch_size: int
    max_iter: int
    steps: tuple[int, ...]
    gamma: float
    warmup_iters: int
    warmup_factor: float
    base_lr: float
    layer_decay: float
    weight_decay: float
    decay_1d: bool
    min_size_train: tuple[int, ...]
    max_size_train: int
    crop_prob: float
    drop_path_rate: float


RESNET_1X = DetectionRecipe(
    batch_size=16, max_iter=90_000, steps=(60_000, 80_000), gamma=0.25, warmup_iters=1000, warmup_factor=0.01,
    base_lr=2.5e-4, layer_decay=0.6, weight_decay=1e-4, decay_1d=True,
    min_size_train=tuple(range(480, 897, 32)), max_size_train=1333, crop_prob=0.0, drop_path_rate=0.0,
)
CONVNEXT_BASE_3X = DetectionRecipe(
    batch_size=16, max_iter=36 * EPOCH_ITERATIONS, steps=(27 * EPOCH_ITERATIONS, 33 * EPOCH_ITERATIONS), gamma=0.2,
    warmup_iters=500, warmup_factor=0.001, base_lr=2e-4, layer_decay=0.65, weight_decay=0.05, decay_1d=False,
    min_size_train=tuple(range(480, 801, 32)), max_size_train=1333, crop_prob=0.5, drop_path_rate=0.5,
)

RECIPES: Mapping[str, DetectionRecipe] = MappingProxyType({
    "resnet50": RESNET_1X,
    "resnet101": RESNET_1X,  # the authors' layer decay covers R101 (N = 11); the schedule is the same
    "convnext_base": CONVNEXT_BASE_3X,
})
SCHEDULES = {RESNET_1X: "1x", CONVNEXT_BASE_3X: "3x"}  # their usual names: 12 and 36 COCO epochs


def paper_schedule(recipe: str, batch_size: int, max_iter: int, steps: tuple[int, ...]) -> str | None:
    """``1x`` or ``3x`` for a run on its recipe's schedule (the length of the paper's numbers), else None: a
    shortened run is not compared with them."""
    named = RECIPES[recipe]
    return SCHEDULES[named] if (batch_size, max_iter, tuple(steps)) == (named.batch_size, named.max_iter,
                                                                           named.steps) else None
