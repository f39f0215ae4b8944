"""Image files: which names count as images, an ImageFolder root's train/val splits, and an even spread over a list
(for samples that must not vary)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

from torchvision.datasets import ImageFolder

from .config import ConfigError

T = TypeVar("T")

# The extensions torchvision's ImageFolder reads.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def spread(items: Sequence[T], count: int) -> list[T]:
    """``count`` items evenly spaced over ``items`` (all of them if there are fewer): a class-sorted folder shows
    several classes, and the same ones every time, unlike a random draw."""
    count = min(max(count, 0), len(items))
    return [items[i * len(items) // count] for i in range(count)]


def image_folders(root: str | Path, train: Callable, val: Callable, key: str) -> tuple[ImageFolder, ImageFolder]:
    """``root/train`` and ``root/val`` as ImageFolders with the given transforms; both must hold the same classes.
    ``key`` names the setting that gave ``root`` in the errors."""
    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ConfigError(f"params: {key}: no {split}/ folder in {root} (expected an ImageFolder root)")
    train_set, val_set = _image_folder(root / "train", train, key), _image_folder(root / "val", val, key)
    if train_set.classes != val_set.classes:
        raise ConfigError(f"params: {key}: {root}/train has {len(train_set.classes)} classes and "
                          f"{root}/val {len(val_set.classes)}; they must have the same class folders")
    return train_set, val_set


def _image_folder(folder: Path, transform: Callable, key: str) -> ImageFolder:
    try:
        return ImageFolder(str(folder), transform)
    except FileNotFoundError as err:  # no class folders, or a class folder without an image file
        raise ConfigError(f"params: {key}: {folder}: {str(err).splitlines()[0]}") from None
