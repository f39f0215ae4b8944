"""The ``detection`` section of params.yaml: Mask R-CNN transfer to a COCO-format dataset.

Defaults are the SparK authors' COCO recipe (Detectron2 0.6, Mask R-CNN R50-FPN, 1x schedule, AdamW with
layer-wise lr decay 0.6), so the paper preset only names the data; CPU presets override sizes and lengths.
Plain Python on purpose: params.yaml validates before Detectron2 is imported, or even installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from spark.config import Section, require

# Encoders Detectron2's own ResNet implements (depth → timm name); anything else goes through the timm wrapper.
RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}


@dataclass
class DetectionConfig(Section):
    """Dataset, encoder and the Detectron2 recipe; see ``eval/detection/recipe.py`` for where each lands."""

    SECTION: ClassVar[str] = "detection"
    # Keys that may change when a run is resumed: they affect speed or waiting, not the trained weights.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"num_workers", "dist_timeout_minutes"})

    # COCO-format dataset: annotation JSONs and image folders, relative to ``data_root`` unless absolute.
    data_root: str = "/datasets/coco"
    train_json: str = "annotations/instances_train2017.json"
    train_images: str = "train2017"
    val_json: str = "annotations/instances_val2017.json"
    val_images: str = "val2017"
    mask_format: Literal["polygon", "bitmask"] = "polygon"  # bitmask reads RLE segmentations too

    # Encoder: a timm name. "resnet" = Detectron2's own ResNet (the authors' path), "timm" = any timm convnet.
    arch: str = "resnet50"
    backbone: Literal["resnet", "timm"] = "resnet"
    drop_path_rate: float = 0.0  # timm backbone only

    # Input: multi-scale training on the short side, ImageNet mean/std in RGB.
    min_size_train: tuple[int, ...] = tuple(range(480, 897, 32))
    max_size_train: int = 1333
    min_size_test: int = 800
    max_size_test: int = 1333

    # Solver: 1x schedule, AdamW, layer-wise lr decay; batch_size is the total over all processes.
    batch_size: int = 16
    max_iter: int = 90_000
    steps: tuple[int, ...] = (60_000, 80_000)
    gamma: float = 0.25
    base_lr: float = 2.5e-4
    layer_decay: float = 0.6
    weight_decay: float = 1e-4
    warmup_iters: int = 1000

    # Heads and test. The 4-conv box head costs per ROI: on a CPU, train on fewer ROIs, test on fewer proposals
    # and detections; a 0 score threshold keeps the AP of short runs defined.
    roi_per_image: int = 512
    proposals_test: int = 1000
    detections_per_image: int = 100
    score_thresh_test: float = 0.05
    precise_bn_iters: int = 200  # 0 turns precise BN off
    eval_period: int = 0  # 0: evaluate once, after the last iteration
    checkpoint_period: int = 5000
    num_workers: int = 4
    seed: int = 0
    dist_timeout_minutes: float = 60  # a collective's wait for the slowest process (DDP), as in training

    def __post_init__(self) -> None:
        for key in ("batch_size", "max_iter", "roi_per_image", "proposals_test", "detections_per_image",
                    "checkpoint_period"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("precise_bn_iters", "eval_period", "num_workers", "seed"):
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        require(self.backbone == "timm" or self.arch in RESNET_DEPTHS, "arch",
                f"the resnet backbone supports {', '.join(RESNET_DEPTHS)}, got {self.arch!r} (use backbone: timm)")
        require(len(self.min_size_train) >= 1 and min(self.min_size_train) >= 32, "min_size_train",
                f"must be a non-empty list of sizes >= 32, got {list(self.min_size_train)}")
        require(self.max_size_train >= max(self.min_size_train), "max_size_train", "must be >= every min_size_train")
        require(32 <= self.min_size_test <= self.max_size_test, "min_size_test",
                f"must be in [32, max_size_test], got {self.min_size_test}")
        require(list(self.steps) == sorted(set(self.steps)) and all(0 < s < self.max_iter for s in self.steps),
                "steps", f"must increase strictly within (0, max_iter), got {list(self.steps)}")
        require(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        require(self.base_lr > 0, "base_lr", f"must be > 0, got {self.base_lr}")
        require(0 < self.layer_decay <= 1, "layer_decay", f"must be in (0, 1], got {self.layer_decay}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.warmup_iters >= 0, "warmup_iters", f"must be >= 0, got {self.warmup_iters}")
        require(0 <= self.drop_path_rate < 1, "drop_path_rate", f"must be in [0, 1), got {self.drop_path_rate}")
        require(0 <= self.score_thresh_test < 1, "score_thresh_test",
                f"must be in [0, 1), got {self.score_thresh_test}")
        require(self.dist_timeout_minutes > 0, "dist_timeout_minutes", f"must be > 0, got {self.dist_timeout_minutes}")

    def path(self, relative: str) -> Path:
        """A dataset path resolved against ``data_root`` (absolute paths pass through)."""
        return Path(self.data_root) / relative
