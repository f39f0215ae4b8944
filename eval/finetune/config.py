"""The ``finetune`` section of params.yaml: which encoder to fine-tune on which ImageFolder, and how.

The recipe keys (batch, epochs, optimizer, lr, layer decay, weight decay, mixup, repeated augmentation,
drop-path, EMA) come from a per-model recipe (:mod:`eval.finetune.recipes`): ``recipe: auto`` takes the one named
like ``arch``; any recipe key written in the section overrides it. Everything is checked when the section is parsed, before any image is
read, with one line naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import timm

from spark.config import (
    AUTO, AtLeast, ConfigError, DropPathRate, OneOf, Range, check_fields, parse_with_recipe, require,
)
from spark.engine import CompileSetting, TrainingConfig

from ..supervised import OWN, check_source
from .data import IMAGENET_CROP_SCALE, train_transform
from .layer_decay import supports_layer_decay
from .recipes import RECIPES, OptimizerName

DEFAULT_ARCH = "resnet50"


@dataclass(kw_only=True)
class FinetuneConfig(TrainingConfig):
    """One fine-tuning run: the classifier, the data, and a recipe (see :class:`spark.engine.TrainingConfig`)."""

    SECTION: ClassVar[str] = "finetune"
    # The supervised arm's weights are its init, which a resumed run checks as such; the other arms never read them.
    RESUMABLE: ClassVar[frozenset[str]] = TrainingConfig.RESUMABLE | {"supervised_weights"}

    data: str  # ImageFolder root: train/<class>/*, val/<class>/*
    arch: str = DEFAULT_ARCH  # any timm classifier; layer decay < 1 needs a ResNet or a ConvNeXt
    # Where unset recipe keys come from; "auto" in params.yaml is resolved to the one named like arch.
    recipe: Annotated[str, OneOf(*RECIPES)]
    input_size: Annotated[int, AtLeast(32)] = 224
    # The supervised arm's classifier (the `supervised_models`): "torchvision:<weights>", "timm:<model>.<tag>" or a
    # file, found offline as eval/supervised.py says ("own" is detection's: this DAG's scratch run on these labels).
    supervised_weights: str = OWN

    # The recipe (and epochs, warmup_epochs, base_lr, weight_decay): no defaults here, a recipe fills what the
    # section leaves out.
    global_batch: Annotated[int, AtLeast(2)]  # Mixup pairs each image with another of its batch
    optimizer: OptimizerName
    layer_decay: Annotated[float, Range(0, 1, "(]")]  # lr scale per layer: layer_decay ** (layers above it); 1 disables
    mixup: Annotated[float, AtLeast(0)]  # Mixup alpha; 0 turns Mixup and CutMix off (targets are still label-smoothed)
    aug_repeats: Annotated[int, AtLeast(0)]  # repeated augmentation: each image this often per epoch (0: once)
    drop_path_rate: DropPathRate
    ema_decay: Annotated[float, Range(0, 1, "[)")]

    # The same in every recipe.
    cutmix: Annotated[float, AtLeast(0)] = 1.0  # CutMix alpha
    mix_switch_prob: Annotated[float, Range(0, 1)] = 0.5  # probability of CutMix instead of Mixup for a batch
    label_smoothing: Annotated[float, Range(0, 1, "[)")] = 0.1
    loss: Literal["auto", "bce", "ce"] = AUTO  # auto: BCE for LAMB, soft-target cross-entropy for AdamW
    augment: str = AUTO  # auto: TrivialAugmentWide below 384 px, AutoAugment "v0" from 384; trivial; none; a timm spec
    erase_prob: Annotated[float, Range(0, 1)] = 0.25  # RandomErasing probability
    crop_scale: tuple[float, float] = IMAGENET_CROP_SCALE  # RandomResizedCrop area range
    # Resize the shorter side to input_size / eval_crop, then centre-crop input_size.
    eval_crop: Annotated[float, Range(0, 1, "(]")] = 0.95
    ema_warmup: bool = False  # timm's EMA decay warmup, for runs too short for ema_decay (CPU presets)
    # Labels kept per class (stratified, drawn from `seed`: the same split for every init).
    label_fraction: Annotated[float, Range(0, 1, "(]")] = 1.0
    eval_every: Annotated[int, AtLeast(1)] = 1  # epochs between evaluations (the last epoch is always evaluated)
    clip: float = 0.0  # the reference does not clip
    compile: CompileSetting = False

    def __post_init__(self) -> None:
        require(bool(self.data), "data", "must name an ImageFolder root with train/ and val/")
        require(timm.is_model(self.arch), "arch", f"unknown timm architecture {self.arch!r}")
        require((problem := check_source(self.supervised_weights)) is None, "supervised_weights", str(problem))
        check_fields(self)
        self.check_schedule()
        require(self.layer_decay == 1 or supports_layer_decay(self.arch), "layer_decay",
                f"layer-wise lr decay is defined for timm ResNets and ConvNeXts, not {self.arch!r}; set it to 1")
        require(len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, "crop_scale",
                f"must be two numbers 0 < low <= high <= 1, got {self.crop_scale}")
        try:
            train_transform(self.input_size, self.augment, self.erase_prob, self.crop_scale)
        except ValueError as err:
            raise ConfigError(f"augment: {err}") from None

    @classmethod
    def parse(cls, params: dict[str, Any]) -> FinetuneConfig:
        """The validated ``finetune`` section of loaded params, recipe applied."""
        return parse_with_recipe(params, cls, RECIPES, DEFAULT_ARCH)

    @property
    def loss_name(self) -> Literal["bce", "ce"]:
        """The reference pairs BCE with LAMB (ResNets) and soft-target cross-entropy with AdamW (ConvNeXts)."""
        if self.loss != AUTO:
            return self.loss
        return "bce" if self.optimizer == "lamb" else "ce"

    def check_world_size(self, world_size: int) -> None:
        """Each rank gets the same even batch: Mixup pairs every image with the batch reversed."""
        if self.global_batch % (2 * world_size):
            raise ConfigError(f"params: {self.SECTION}.global_batch: {self.global_batch} does not split into an even "
                              f"batch per process over {world_size} process(es)")
