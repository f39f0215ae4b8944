"""The fine-tuning loss on the soft targets that Mixup/CutMix and label smoothing produce."""
from __future__ import annotations

from typing import Literal

from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
from torch import nn


def build_criterion(name: Literal["bce", "ce"]) -> nn.Module:
    """``bce``: per-class binary cross-entropy, mean over samples and classes (the reference's LAMB runs);
    ``ce``: soft-target cross-entropy (its AdamW runs). Smoothing is already in the targets, so BCE adds none."""
    if name == "bce":
        return BinaryCrossEntropy(smoothing=0.0, target_threshold=None)
    return SoftTargetCrossEntropy()
