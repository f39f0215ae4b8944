"""Unlabelled images for pretraining: any folder (recursive) or a manifest, with the reference augmentation.

Augmentation as in the reference: RandomResizedCrop(scale=(0.67, 1), bicubic), horizontal flip, ImageNet mean/std.
The loader's workers stop at uint8 pixels and the trainer normalises whole batches on its device
(:func:`normalize`, the same fp32 arithmetic as ToTensor + Normalize): a quarter of the bytes through shared memory
and the host-to-device copy, and no per-image float work on the CPU cores that feed the GPUs.
An image that cannot be decoded stops the run with its path, unless ``skip_bad_images`` asks to skip and count it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from spark.config import ConfigError
from spark.images import IMAGE_EXTENSIONS, BadImageError, is_image, read_rgb

logger = logging.getLogger(__name__)

CROP_SCALE = (0.67, 1.0)


def list_images(source: str | Path, key: str = "pretrain.data") -> list[Path]:
    """Image paths under a folder (recursively, symlinks followed, sorted) or listed in a manifest file (one path
    per line, relative to the manifest's folder; blank lines and ``#`` comments ignored). Reads no image."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(
            Path(root, name)
            for root, _, names in os.walk(source, followlinks=True)
            for name in names
            if is_image(name)
        )
    elif source.is_file():
        lines = (line.strip() for line in source.read_text().splitlines())
        paths = [source.parent / line for line in lines if line and not line.startswith("#")]
    else:
        raise ConfigError(f"params: {key}: no such folder or manifest file: {source}")
    if not paths:
        raise ConfigError(f"params: {key}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {source}")
    return paths


def train_transform(size: int) -> Callable[[Image.Image], Tensor]:
    """The reference pretraining augmentation up to uint8 (3, size, size) pixels; :func:`normalize` finishes it."""
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=CROP_SCALE, interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.PILToTensor(),
    ])


def normalize(images: Tensor) -> Tensor:
    """uint8 images (any shape ``(..., 3, H, W)``, any device and memory format) as ImageNet-normalised fp32: bit
    for bit what ToTensor + Normalize compute per image (divide by 255, subtract the mean, divide by the std)."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float32, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_DEFAULT_STD, dtype=torch.float32, device=images.device)[:, None, None]
    return images.float().div_(255).sub_(mean).div_(std)


def eval_transform(size: int) -> Callable[[Image.Image], Tensor]:
    """Shorter side to ``size`` and a centre crop: how fixed images are shown (reconstruction figures)."""
    return transforms.Compose([
        transforms.Resize(size, interpolation=InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    ])


class ImageFiles(Dataset):
    """Transformed images at ``paths``; an unreadable one raises, or yields None when ``skip_bad``."""

    def __init__(self, paths: Sequence[Path], transform: Callable[[Image.Image], Tensor], skip_bad: bool = False):
        self.paths = list(paths)
        self.transform = transform
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor | None:
        try:
            image = read_rgb(self.paths[index])
        except BadImageError as err:
            if not self.skip_bad:
                raise
            logger.warning("skipping: %s", err)
            return None
        return self.transform(image)


def collate_images(batch: list[Tensor | None]) -> tuple[Tensor, int]:
    """Stack the readable images of a batch; also return how many were skipped."""
    images = [x for x in batch if x is not None]
    if not images:
        raise BadImageError(f"all {len(batch)} images of a batch are unreadable (see the warnings above)")
    return torch.stack(images), len(batch) - len(images)


def load_images(paths: Sequence[Path], size: int) -> Tensor:
    """A normalised batch of ``paths`` under :func:`eval_transform`."""
    transform = eval_transform(size)
    return torch.stack([transform(read_rgb(p)) for p in paths])
