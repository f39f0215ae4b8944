"""Image files: which names count as images, and an even spread over a list (for samples that must not vary)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

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
