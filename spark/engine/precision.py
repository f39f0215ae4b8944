"""Numeric format of a run: bf16 autocast (CUDA and CPU through one code path) and channels_last memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

PrecisionName = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class Precision:
    """``bf16`` autocasts forward passes to bfloat16 (weights, grads and optimizer stay fp32, so no loss scaling);
    ``channels_last`` stores 4-D activations and weights NHWC, which oneDNN and cuDNN convolutions prefer."""

    name: PrecisionName = "fp32"
    channels_last: bool = False

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.name == "bf16")

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=self.memory_format)

    def prepare_input(self, images: Tensor, device: torch.device) -> Tensor:
        """Move a batch to ``device`` (asynchronously from pinned memory) in the run's memory format."""
        return images.to(device, non_blocking=True, memory_format=self.memory_format)
