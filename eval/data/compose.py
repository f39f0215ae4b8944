"""Compositing Fashion-MNIST objects onto photo crops, with exact masks and occlusion.

An object's mask is its own dark background thresholded away (holes filled), so every pasted pixel is a real object
pixel and every annotation is exact: an object painted later hides what it covers, and :func:`paste` returns the
part of each mask that stays visible.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from eval.data.sources import Photo

OBJECT_THRESHOLD = 10  # Fashion-MNIST background is 0 with faint noise; objects are brighter (5th pct. >= 22)
_MIN_SHADE = 0.15  # the darkest object pixel keeps 15% of its tint, so dark fabric stays visible as texture
_BACKGROUND_CROP = (0.3, 1.0)  # crop side as a fraction of the photo's shorter side


@dataclass(frozen=True)
class Sprite:
    """A tinted object ready to paste: ``rgb`` (h, w, 3) uint8 and its ``mask`` (h, w) bool."""

    rgb: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Placement:
    sprite: Sprite
    top: int
    left: int


def object_mask(item: np.ndarray) -> np.ndarray:
    """The object's silhouette in a 28x28 Fashion-MNIST item: bright pixels, holes filled."""
    return ndimage.binary_fill_holes(item > OBJECT_THRESHOLD)


def make_sprite(item: np.ndarray, side: int, rng: np.random.Generator) -> Sprite:
    """Scale ``item`` to ``side`` px, tint its grey shading with a random colour, flip it half of the time."""
    shade = np.asarray(Image.fromarray(item).resize((side, side), Image.Resampling.BILINEAR), np.float32) / 255
    silhouette = Image.fromarray(object_mask(item).astype(np.uint8) * 255)
    mask = np.asarray(silhouette.resize((side, side), Image.Resampling.BILINEAR)) >= 128
    tint = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.5, 1.0)), np.float32)
    rgb = np.rint(255 * tint * (_MIN_SHADE + (1 - _MIN_SHADE) * shade)[..., None]).astype(np.uint8)
    if rng.random() < 0.5:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    return Sprite(np.ascontiguousarray(rgb), np.ascontiguousarray(mask))


def random_sprite(item: np.ndarray, image_size: int, scale: tuple[float, float], rng: np.random.Generator) -> Placement:
    """A sprite whose side is a random fraction ``scale`` of the image, at a random position fully inside it."""
    side = max(8, round(rng.uniform(*scale) * image_size))
    sprite = make_sprite(item, side, rng)
    top, left = rng.integers(0, image_size - side + 1, size=2)
    return Placement(sprite, int(top), int(left))


def random_background(photos: Sequence[Photo], size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of a random photo, resized to ``size`` px and flipped half of the time."""
    photo = photos[int(rng.integers(len(photos)))].image
    side = rng.uniform(*_BACKGROUND_CROP) * min(photo.size)
    left, top = rng.uniform(0, photo.width - side), rng.uniform(0, photo.height - side)
    crop = photo.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop)


def paste(background: np.ndarray, placements: Sequence[Placement]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Paint ``placements`` in order onto a copy of ``background``; returns the image and each visible mask."""
    image = background.copy()
    owner = np.full(background.shape[:2], -1, np.int32)  # index of the object that owns each pixel
    for index, p in enumerate(placements):
        h, w = p.sprite.mask.shape
        window = (slice(p.top, p.top + h), slice(p.left, p.left + w))
        image[window][p.sprite.mask] = p.sprite.rgb[p.sprite.mask]
        owner[window][p.sprite.mask] = index
    return image, [owner == index for index in range(len(placements))]


def compose_scene(photos: Sequence[Photo], items: Iterable[np.ndarray], size: int, scale: tuple[float, float],
                  rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """A ``size`` px image of ``items`` pasted in order over a random photo crop, and each item's visible mask."""
    background = random_background(photos, size, rng)
    return paste(background, [random_sprite(item, size, scale, rng) for item in items])
