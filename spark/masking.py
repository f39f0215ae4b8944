"""Random masking at the encoder's coarsest grid: one cell per pixel of the last feature map."""
from __future__ import annotations

import torch
from torch import Tensor


def num_visible(grid: tuple[int, int], mask_ratio: float) -> int:
    """Cells kept per image: ``round(h * w * (1 - mask_ratio))`` (20 of 49 at 224 px, ratio 0.6)."""
    return round(grid[0] * grid[1] * (1 - mask_ratio))


def random_visible(
    batch: int,
    grid: tuple[int, int],
    count: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A bool mask (B, 1, h, w), True = visible, with exactly ``count`` cells per image chosen uniformly.

    The noise is drawn on the generator's device so a seeded generator reproduces the mask on any device.
    """
    h, w = grid
    noise_device = generator.device if generator is not None else device
    keep = torch.rand(batch, h * w, generator=generator, device=noise_device).argsort(dim=1)[:, :count]
    visible = torch.zeros(batch, h * w, dtype=torch.bool, device=noise_device)
    visible.scatter_(1, keep, True)
    return visible.view(batch, 1, h, w).to(device)


def upsample_visible(visible: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest upsampling of a (B, 1, h, w) mask to ``size``: each cell becomes an (H/h) x (W/w) block."""
    h, w = visible.shape[-2:]
    height, width = size
    if height % h or width % w:
        raise ValueError(f"a {height}x{width} feature map is not a whole multiple of the {h}x{w} mask grid")
    return visible.repeat_interleave(height // h, dim=2).repeat_interleave(width // w, dim=3)
