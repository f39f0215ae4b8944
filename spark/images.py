"""Image files: which names count as images, how one is decoded to RGB, an ImageFolder root's train/val splits,
and an even spread over a list (for samples that must not vary)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
from PIL import Image, ImageOps
from torchvision.datasets import ImageFolder

from .config import ConfigError
from .errors import InputError

T = TypeVar("T")

# The extensions torchvision's ImageFolder reads.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow's modes for 16-bit grey (PNG, TIFF)


class BadImageError(InputError, RuntimeError):
    """An image file that cannot be decoded; the message names its path."""


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully (a truncated file fails here, not in a batch) as :func:`to_rgb` shows it, or raise
    :class:`BadImageError` naming it."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImageError(f"cannot read image {path}: {err}") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as a photo viewer shows the file: turned by its EXIF orientation, 16-bit grey scaled to 8 bits
    (Pillow's own conversion would clip it to white), a palette's transparency and any alpha dropped, grey,
    CMYK and palettes converted as ``Image.convert`` does (what torchvision's loader does)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT:
        pixels = np.asarray(image, dtype=np.float64) / 257
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a palette with transparency goes straight to RGB
    return image.convert("RGB")


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
        return ImageFolder(str(folder), transform, loader=read_rgb)
    except FileNotFoundError as err:  # no class folders, or a class folder without an image file
        raise ConfigError(f"params: {key}: {folder}: {str(err).splitlines()[0]}") from None
