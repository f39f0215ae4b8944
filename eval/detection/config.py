"""The ``detection`` section of params.yaml: Mask R-CNN transfer to a COCO-format dataset.

The schedule, optimizer and training sizes come from a per-backbone recipe (:mod:`eval.detection.recipes`: the
authors' Detectron2 1x for ResNets, their MMDetection 3x for ConvNeXt-B): ``recipe: auto`` takes the one named like
``arch``, any recipe key written in the section overrides it, so the paper preset only names the data and CPU
presets shrink a recipe. Plain Python on purpose: params.yaml validates before Detectron2 is imported, or even
installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from spark.config import (
    Above, AtLeast, DropPathRate, OneOf, Range, Section, check_fields, parse_with_recipe, require,
)

from ..supervised import OWN, check_source
from .recipes import RECIPES, paper_schedule

# Encoders Detectron2's own ResNet implements (depth → timm name); anything else goes through the timm wrapper.
RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}
DEFAULT_ARCH = "resnet50"


@dataclass(kw_only=True)
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
    arch: str = DEFAULT_ARCH
    backbone: Literal["resnet", "timm"] = "resnet"
    # The supervised arm's backbone weights: "own" (this DAG's from-scratch classifier with all labels),
    # "torchvision:<weights>", "timm:<model>.<tag>" or a file; eval/supervised.py says how each is found offline.
    supervised_weights: str = OWN

    # Where unset recipe keys come from; "auto" in params.yaml is resolved to the one named like arch.
    recipe: Annotated[str, OneOf(*RECIPES)]
    # The recipe (eval/detection/recipes.py says what each is): no defaults here.
    batch_size: Annotated[int, AtLeast(1)]  # total over all processes
    max_iter: Annotated[int, AtLeast(1)]
    steps: tuple[int, ...]
    gamma: Annotated[float, Range(0, 1, "(]")]
    warmup_iters: Annotated[int, AtLeast(0)]
    warmup_factor: Annotated[float, Range(0, 1, "(]")]  # the warmup's first lr, as a share of base_lr
    base_lr: Annotated[float, Above(0)]
    layer_decay: Annotated[float, Range(0, 1, "(]")]
    weight_decay: Annotated[float, AtLeast(0)]
    decay_1d: bool  # weight decay on biases and layer scales too (never on norms)
    min_size_train: tuple[int, ...]  # multi-scale training: one short side drawn per image, ImageNet mean/std, RGB
    max_size_train: int
    crop_prob: Annotated[float, Range(0, 1)]  # share of images cropped DETR's way before the resize
    drop_path_rate: DropPathRate  # timm backbone only

    min_size_test: int = 800  # test: one short side, as in both libraries
    max_size_test: int = 1333

    # Heads and test. The 4-conv box head costs per ROI: on a CPU, train on fewer ROIs, test on fewer proposals
    # and detections; a 0 score threshold keeps the AP of short runs defined.
    roi_per_image: Annotated[int, AtLeast(1)] = 512
    proposals_test: Annotated[int, AtLeast(1)] = 1000
    detections_per_image: Annotated[int, AtLeast(1)] = 100
    score_thresh_test: Annotated[float, Range(0, 1, "[)")] = 0.05
    precise_bn_iters: Annotated[int, AtLeast(0)] = 200  # 0 turns precise BN off
    eval_period: Annotated[int, AtLeast(0)] = 0  # 0: evaluate once, after the last iteration
    checkpoint_period: Annotated[int, AtLeast(1)] = 5000
    num_workers: Annotated[int, AtLeast(0)] = 4
    seed: Annotated[int, AtLeast(0)] = 0
    # A collective's wait for the slowest process (DDP), as in training.
    dist_timeout_minutes: Annotated[float, Above(0)] = 60

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.backbone == "timm" or self.arch in RESNET_DEPTHS, "arch",
                f"the resnet backbone supports {', '.join(RESNET_DEPTHS)}, got {self.arch!r} (use backbone: timm)")
        require((problem := check_source(self.supervised_weights)) is None, "supervised_weights", str(problem))
        require(len(self.min_size_train) >= 1 and min(self.min_size_train) >= 32, "min_size_train",
                f"must be a non-empty list of sizes >= 32, got {list(self.min_size_train)}")
        require(self.max_size_train >= max(self.min_size_train), "max_size_train", "must be >= every min_size_train")
        require(32 <= self.min_size_test <= self.max_size_test, "min_size_test",
                f"must be in [32, max_size_test], got {self.min_size_test}")
        require(list(self.steps) == sorted(set(self.steps)) and all(0 < s < self.max_iter for s in self.steps),
                "steps", f"must increase strictly within (0, max_iter), got {list(self.steps)}")

    @classmethod
    def parse(cls, params: dict[str, Any]) -> DetectionConfig:
        """The validated ``detection`` section of loaded params, recipe applied."""
        return parse_with_recipe(params, cls, RECIPES, DEFAULT_ARCH)

    @property
    def paper_schedule(self) -> str | None:
        """``1x`` or ``3x`` when this run trains on its recipe's schedule (the paper's numbers compare), else None."""
        return paper_schedule(self.recipe, self.batch_size, self.max_iter, self.steps)

    def path(self, relative: str) -> Path:
        """A dataset path resolved against ``data_root`` (absolute paths pass through)."""
        return Path(self.data_root) / relative
