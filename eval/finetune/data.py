"""ImageFolder data for fine-tuning with the reference's transforms and batch mixing.

Train: timm's ImageNet pipeline as the authors configure it (RandomResizedCrop bicubic, flip, an augmentation
policy instead of colour jitter, ImageNet mean/std, RandomErasing with per-pixel noise). Eval: shorter side to
``size / crop`` (bicubic), centre crop. Mixup/CutMix and label smoothing act on whole batches (timm's ``Mixup``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from PIL import Image
from timm.data import Mixup
from timm.data.transforms_factory import transforms_imagenet_eval, transforms_imagenet_train
from torch import Tensor
from torchvision.transforms import Compose, InterpolationMode, TrivialAugmentWide


TRIVIAL, NO_POLICY = "trivial", "none"
# From this input size on the reference replaces TrivialAugmentWide by timm's AutoAugment policy "v0".
LARGE_INPUT, LARGE_INPUT_POLICY = 384, "v0"
IMAGENET_CROP_SCALE = (0.08, 1.0)  # RandomResizedCrop's area range in the reference (timm's default)


def augment_policy(augment: str, size: int) -> str:
    """``auto`` as the reference resolves it; other names pass through."""
    if augment != "auto":
        return augment
    return TRIVIAL if size < LARGE_INPUT else LARGE_INPUT_POLICY


def train_transform(size: int, augment: str, erase_prob: float,
                    crop_scale: tuple[float, float] = IMAGENET_CROP_SCALE) -> Callable[[Image.Image], Tensor]:
    """The training transform; ``augment`` is ``auto``, ``trivial``, ``none`` or a timm auto-augment spec
    (``rand-m9-mstd0.5``, ``v0`` ...); ``crop_scale`` bounds RandomResizedCrop's area. Raises ValueError for a spec
    timm cannot parse."""
    policy = augment_policy(augment, size)
    try:
        primary, secondary, final = transforms_imagenet_train(
            size, scale=tuple(crop_scale), interpolation="bicubic",
            auto_augment=None if policy in (TRIVIAL, NO_POLICY) else policy,
            color_jitter=None, re_prob=erase_prob, re_mode="pixel", re_count=1, separate=True)
    except (AssertionError, KeyError, IndexError, ValueError) as err:  # what timm's policy parsers raise
        raise ValueError(f"not 'auto', '{TRIVIAL}', '{NO_POLICY}' or a timm auto-augment spec: {augment!r}") from err
    if policy == TRIVIAL:
        secondary = Compose([TrivialAugmentWide(interpolation=InterpolationMode.BICUBIC)])
    return Compose([*primary.transforms, *secondary.transforms, *final.transforms])


def eval_transform(size: int, crop: float) -> Callable[[Image.Image], Tensor]:
    """Shorter side to ``floor(size / crop)`` (bicubic), centre crop ``size``, ImageNet mean/std."""
    return transforms_imagenet_eval(size, crop_pct=crop, interpolation="bicubic")


def batch_mixer(num_classes: int, *, mixup: float, cutmix: float, switch_prob: float, smoothing: float) -> Mixup:
    """Mixup or CutMix on every batch (CutMix with ``switch_prob``), soft targets with label smoothing.

    As in the reference, ``mixup == 0`` turns mixing off entirely; targets are still smoothed one-hot vectors.
    """
    mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=switch_prob, mode="batch",
                  label_smoothing=smoothing, num_classes=num_classes)
    mixer.mixup_enabled = mixup > 0
    return mixer


def label_split(targets: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Indices of a stratified ``fraction`` of the labelled images: ``max(1, round(fraction * n_c))`` of each
    class's ``n_c``, drawn from ``seed`` alone, so every initialisation of a seed fine-tunes on the same images."""
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(int(target), []).append(index)
    chosen: list[int] = []
    for target in sorted(by_class):
        indices = by_class[target]
        keep = max(1, round(fraction * len(indices)))
        chosen += [indices[i] for i in torch.randperm(len(indices), generator=generator)[:keep].tolist()]
    return sorted(chosen)
