"""The authors' ImageNet fine-tuning recipes, one per model (their ``downstream_imagenet/arg.py``,
``HP_DEFAULT_VALUES``; ``convnext_large_384`` is the row their code picks for ConvNeXt-L at 384 px).

A recipe fills every recipe key of the ``finetune`` section that params.yaml does not set itself, so the paper
preset only names the model and the data, and a CPU preset can start from a paper recipe and shrink it.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Mapping

OptimizerName = Literal["lamb", "adamw"]


@dataclass(frozen=True)
class Recipe:
    """One row of the reference table; ``lr = base_lr * global_batch / 256``. ``mixup`` is the Mixup alpha
    (CutMix alpha is 1.0 in every recipe); ``aug_repeats`` is repeated augmentation (each image that many times
    per epoch, on different ranks; 0: off); ``ema_decay`` is per optimizer step."""

    global_batch: int
    epochs: int
    warmup_epochs: int
    optimizer: OptimizerName
    base_lr: float
    layer_decay: float
    weight_decay: float
    mixup: float
    aug_repeats: int
    drop_path_rate: float
    ema_decay: float


RECIPES: Mapping[str, Recipe] = MappingProxyType({
    "resnet50": Recipe(2048, 300, 5, "lamb", 2e-3, 0.7, 0.02, 0.1, 0, 0.05, 0.9999),
    "resnet101": Recipe(2048, 300, 5, "lamb", 1e-3, 0.8, 0.02, 0.1, 0, 0.2, 0.9999),
    "resnet152": Recipe(2048, 300, 5, "lamb", 1e-3, 0.8, 0.02, 0.1, 0, 0.2, 0.9999),
    "resnet200": Recipe(2048, 300, 5, "lamb", 1e-3, 0.8, 0.02, 0.1, 0, 0.2, 0.9999),
    "convnext_small": Recipe(4096, 400, 20, "adamw", 2e-4, 0.7, 0.01, 0.8, 3, 0.3, 0.9999),
    "convnext_base": Recipe(4096, 400, 20, "adamw", 1e-4, 0.7, 0.01, 0.8, 3, 0.4, 0.9999),
    "convnext_large": Recipe(4096, 200, 10, "adamw", 1e-4, 0.7, 0.02, 0.8, 3, 0.5, 0.9999),
    "convnext_large_384": Recipe(1024, 200, 20, "adamw", 6e-5, 0.7, 0.01, 0.8, 3, 0.5, 0.99995),
})
