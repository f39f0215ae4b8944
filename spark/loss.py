"""The reconstruction target and loss: per-patch normalised pixels, MSE over masked patches."""
from __future__ import annotations

import torch
from torch import Tensor

PATCH_NORM_EPS = 1e-6


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, L, p*p*C) with L = (H/p)*(W/p) in row-major patch order."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int]) -> Tensor:
    """Inverse of :func:`patchify`."""
    b, _, d = patches.shape
    p, (h, w) = patch_size, grid
    c = d // (p * p)
    x = patches.reshape(b, h, w, p, p, c)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(b, c, h * p, w * p)


def patch_moments(patches: Tensor) -> tuple[Tensor, Tensor]:
    """Per-patch mean and ``sqrt(var + 1e-6)`` (unbiased variance) over the p*p*C values."""
    mean = patches.mean(dim=-1, keepdim=True)
    std = (patches.var(dim=-1, keepdim=True) + PATCH_NORM_EPS).sqrt()
    return mean, std


def masked_patch_loss(images: Tensor, prediction: Tensor, visible: Tensor, patch_size: int, masked_only: bool = True) -> Tensor:
    """Mean over masked patches (or all, for the ablation) of the per-patch MSE to the normalised pixels.

    ``prediction`` lives in per-patch normalised space; the target is a constant (no gradient reaches the
    input through it).
    """
    with torch.no_grad():
        target = patchify(images.float(), patch_size)
        mean, std = patch_moments(target)
        target = (target - mean) / std
    l2 = (patchify(prediction.float(), patch_size) - target).square().mean(dim=-1)
    weight = (~visible).flatten(1).float() if masked_only else torch.ones_like(l2)
    return (l2 * weight).sum() / (weight.sum() + 1e-8)


def denormalize_patches(prediction: Tensor, images: Tensor, patch_size: int) -> Tensor:
    """Map a per-patch normalised prediction back to input space with each patch's own mean and std."""
    mean, std = patch_moments(patchify(images, patch_size))
    grid = (images.shape[-2] // patch_size, images.shape[-1] // patch_size)
    return unpatchify(patchify(prediction, patch_size) * std + mean, patch_size, grid)
