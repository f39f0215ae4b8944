"""Densify: turn a sparse encoder map into a dense decoder input (norm -> mask token -> projection)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Densify(nn.Module):
    """Normalise visible positions, fill masked ones with a learned token, project to the decoder width.

    ``norm`` is a sparse norm (statistics over visible positions) or ``nn.Identity``; ``kernel_size`` is 1 at
    the coarsest scale and 3 elsewhere, and no projection is used when ``kernel_size`` is 0.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: nn.Module, kernel_size: int) -> None:
        super().__init__()
        self.norm = norm
        self.mask_token = nn.Parameter(torch.zeros(1, in_channels, 1, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)
        if kernel_size:
            self.proj = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        else:
            self.proj = nn.Identity()

    def forward(self, x: Tensor, visible: Tensor) -> Tensor:
        """``visible``: bool (B, 1, H, W) at this map's resolution."""
        return self.proj(torch.where(visible, self.norm(x), self.mask_token))
