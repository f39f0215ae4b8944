"""Mask-pattern vanishing: whether an encoder's features still show where the mask was, scale by scale.

Two measures per scale, over the positions of every image. The authors': the fraction of masked positions whose
feature vector is exactly zero (1 for the sparse encoder by construction; a dense network's biases and norms make
it 0 almost at once, so it cannot tell a faded pattern from a kept one). And a threshold-free one meaningful for a
learned network with biases: the AUROC of telling visible from masked positions by the feature vector's norm,
masked lower (1: every masked position below every visible one; 0.5: no trace of the mask in the norms).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from spark.masking import upsample_visible
from spark.model import SparK

from ..stats import BootstrapInterval, bootstrap_interval
from .encoders import EncoderPair, batched_features

ENCODERS = ("dense", "sparse")  # zero-outing, the method


@dataclass(frozen=True)
class ScaleSurvival:
    """One scale (``reduction``: input pixels per feature position): each encoder's zero fraction and AUROC, the
    AUROC difference (sparse - dense) with its interval over images, and the first image's norm map per encoder."""

    reduction: int
    zero_fraction: dict[str, float]
    auroc: dict[str, float]
    difference: BootstrapInterval
    norms: dict[str, np.ndarray]  # encoder: (h, w) feature norms of the first image
    visible: np.ndarray  # (h, w) its mask at this scale


def weighted_auroc(scores: np.ndarray, positive: np.ndarray) -> Callable[[np.ndarray], float]:
    """``auroc(weights)``: P(a positive scores above a negative) + P(tie) / 2, each position counted ``weights``
    times. The scores are sorted once, so a bootstrap resample costs two bincounts, not a sort."""
    values, group = np.unique(scores, return_inverse=True)

    def auroc(weights: np.ndarray) -> float:
        pos = np.bincount(group, weights * positive, len(values))
        neg = np.bincount(group, weights * ~positive, len(values))
        below = np.cumsum(neg) - neg
        return float(pos @ (below + neg / 2) / (pos.sum() * neg.sum()))

    return auroc


def feature_norms(model: SparK, images: Tensor, visible: Tensor, batch: int) -> list[np.ndarray]:
    """The L2 norm of the feature vector at every position, (n, h, w) per scale, finest first (one batch's maps at
    a time: the norms are all that is kept)."""
    chunks = [[torch.linalg.vector_norm(x.double(), dim=1) for x in maps]
              for maps in batched_features(model, images, visible, batch)]
    return [torch.cat(scale).numpy() for scale in zip(*chunks)]


def mask_survival(pair: EncoderPair, images: Tensor, visible: Tensor, batch: int = 32, resamples: int = 1000,
                  seed: int = 0) -> list[ScaleSurvival]:
    """Survival at each encoder scale, finest first, for masks ``visible`` (n, 1, h, w); intervals resample
    images."""
    maps = {name: feature_norms(getattr(pair, name), images, visible, batch) for name in ENCODERS}
    n = len(images)
    results = []
    for scale, reduction in enumerate(pair.config.scales.reductions):
        norms = {name: maps[name][scale] for name in ENCODERS}
        shown = upsample_visible(visible, norms["dense"].shape[-2:])[:, 0].numpy()
        positions = shown[0].size
        masked = (~shown).reshape(n, -1).sum(1)
        zero_fraction = {name: float(((norms[name] == 0) & ~shown).sum() / masked.sum()) for name in ENCODERS}
        auroc = {name: weighted_auroc(norms[name].ravel(), shown.ravel()) for name in ENCODERS}

        def difference(weights: np.ndarray) -> float:
            per_position = np.repeat(weights, positions)
            return auroc["sparse"](per_position) - auroc["dense"](per_position)

        results.append(ScaleSurvival(
            reduction, zero_fraction, {name: auroc[name](np.ones(n * positions)) for name in ENCODERS},
            bootstrap_interval(difference, n, resamples, seed), {name: norms[name][0] for name in ENCODERS},
            shown[0]))
    return results
