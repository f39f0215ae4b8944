"""The authors' demonstration of mask-pattern vanishing, exactly: a binary mask through 3x3 convolutions with every
weight 1/9, no bias, padding 1. Dense, every hole fills in from its visible neighbours; sparse (the output zeroed
again at masked positions, as a submanifold sparse convolution computes it), the pattern is kept."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from spark.masking import random_visible, upsample_visible

AVERAGE = torch.full((1, 1, 3, 3), 1 / 9, dtype=torch.float64)


@dataclass(frozen=True)
class FixedWeightDemo:
    """The mask and each layer's output, dense and sparse, with the fraction of masked positions still exactly 0."""

    visible: Tensor  # (H, W) bool
    maps: dict[str, list[Tensor]]  # "dense"/"sparse": the output of layers 1..L, (H, W) each
    zero_fraction: dict[str, list[float]]


def fixed_weight_demo(visible: Tensor, layers: int = 3) -> FixedWeightDemo:
    """Run the binary image ``visible`` (1 at visible positions) through ``layers`` averaging convolutions."""
    image = visible.to(torch.float64)[None, None]
    maps: dict[str, list[Tensor]] = {"dense": [], "sparse": []}
    for mode in maps:
        x = image
        for _ in range(layers):
            x = F.conv2d(x, AVERAGE, padding=1)
            if mode == "sparse":
                x = x * image
            maps[mode].append(x[0, 0])
    holes = ~visible
    zero_fraction = {mode: [float((m[holes] == 0).double().mean()) for m in outs] for mode, outs in maps.items()}
    return FixedWeightDemo(visible, maps, zero_fraction)


def patch_mask(cells: int = 8, patch: int = 4, mask_ratio: float = 0.6, seed: int = 0) -> Tensor:
    """A random mask as pretraining draws it: ``cells`` x ``cells`` patches of ``patch`` pixels, ``mask_ratio`` of
    them masked."""
    visible = random_visible(1, (cells, cells), round(cells * cells * (1 - mask_ratio)),
                             generator=torch.Generator().manual_seed(seed))
    return upsample_visible(visible, (cells * patch, cells * patch))[0, 0]
