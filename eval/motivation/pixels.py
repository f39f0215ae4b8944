"""Distribution shift in pixel space: zero-outing adds a spike of zeros to what the encoder sees; dropping the
masked pixels (the sparse encoder sees the visible ones only) leaves the image's distribution as it is.

Distributions are compared by the 1-Wasserstein distance between histograms over fixed bins: in the units of the
normalised pixels, it says how far the mass must move (a 60% spike at 0 moves most of it), is finite for
distributions without common support, and needs no smoothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from spark.masking import upsample_visible

from ..stats import BootstrapInterval, bootstrap_interval

# ImageNet-normalised pixels lie in [-2.12, 2.64] (0 is the dataset's mean colour, what a zeroed pixel becomes).
EDGES = np.linspace(-2.25, 2.75, 201)
CONDITIONS = ("unmasked", "zero_out", "visible")  # every pixel; every pixel, masked ones 0; visible pixels only


@dataclass(frozen=True)
class PixelShift:
    """Distances of the zero-outed and of the visible-only pixels to the unmasked images' pixels, their difference
    (zero_out - visible) with its interval over images, and the pooled histograms (density per bin)."""

    zero_out: float
    visible: float
    difference: BootstrapInterval
    histograms: dict[str, np.ndarray]
    edges: np.ndarray


def pixel_histograms(images: Tensor, visible: Tensor) -> np.ndarray:
    """Per-image pixel counts per bin of :data:`EDGES`, (n, 3 conditions, bins), every channel pooled; values
    outside the bins count in the first or last."""
    n, bins = len(images), len(EDGES) - 1
    shown = upsample_visible(visible, images.shape[-2:]).expand_as(images).flatten(1).double()
    index = torch.bucketize(images.flatten(1).contiguous(), torch.as_tensor(EDGES[1:-1], dtype=images.dtype))
    zero_index = torch.bucketize(torch.zeros(()), torch.as_tensor(EDGES[1:-1], dtype=images.dtype))
    zeroed = torch.where(shown.bool(), index, zero_index)
    offsets = torch.arange(n)[:, None] * bins

    def counts(idx: Tensor, weights: Tensor | None = None) -> np.ndarray:
        flat = (idx + offsets).flatten()
        return torch.bincount(flat, None if weights is None else weights.flatten(), n * bins).view(n, bins).numpy()

    return np.stack([counts(index).astype(np.float64), counts(zeroed).astype(np.float64), counts(index, shown)], 1)


def wasserstein(a: np.ndarray, b: np.ndarray, edges: np.ndarray = EDGES) -> float:
    """W1 between two histograms over ``edges`` (counts, normalised here): the area between their CDFs."""
    cdf_a, cdf_b = np.cumsum(a) / a.sum(), np.cumsum(b) / b.sum()
    return float(np.abs(cdf_a - cdf_b)[:-1] @ np.diff(edges)[:-1])


def pixel_shift(images: Tensor, visible: Tensor, resamples: int = 1000, seed: int = 0) -> PixelShift:
    """The shift of ImageNet-normalised ``images`` (n, 3, H, W) under masks ``visible`` (n, 1, h, w), True =
    visible; the interval resamples images."""
    per_image = pixel_histograms(images, visible)

    def distances(weights: np.ndarray) -> tuple[float, float]:
        unmasked, zero_out, shown = np.tensordot(weights, per_image, 1)
        return wasserstein(zero_out, unmasked), wasserstein(shown, unmasked)

    zero_out, shown = distances(np.ones(len(images)))
    pooled = per_image.sum(0)
    widths = np.diff(EDGES)
    histograms = {name: pooled[i] / pooled[i].sum() / widths for i, name in enumerate(CONDITIONS)}
    difference = bootstrap_interval(lambda w: float(np.subtract(*distances(w))), len(images), resamples, seed)
    return PixelShift(zero_out, shown, difference, histograms, EDGES)
