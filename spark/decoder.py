"""SparK's light UNet decoder: upsample by 2 per block, adding the densified encoder map of each scale."""
from __future__ import annotations

import math

from torch import Tensor, nn


class UNetBlock(nn.Module):
    """ConvTranspose (k4 s2 p1) doubling the resolution, then ``depth`` 3x3 conv-BN pairs with ReLU6 between."""

    def __init__(self, in_channels: int, out_channels: int, depth: int = 2) -> None:
        super().__init__()
        self.up_sample = nn.ConvTranspose2d(in_channels, in_channels, kernel_size=4, stride=2, padding=1, bias=True)
        layers: list[nn.Module] = []
        for i in range(depth):
            cout = out_channels if i == depth - 1 else in_channels
            if i:
                layers.append(nn.ReLU6(inplace=True))
            layers += [nn.Conv2d(in_channels, cout, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.up_sample(x))


class LightDecoder(nn.Module):
    """log2(ratio) UNet blocks with widths ``width, width/2, ..., width/ratio``, then a 1x1 conv to RGB.

    ``forward`` takes the densified maps coarsest first; block ``i`` adds map ``i`` when there is one (with
    fewer maps than blocks the remaining blocks only upsample).
    """

    def __init__(self, width: int, upsample_ratio: int, depth: int = 2, out_channels: int = 3) -> None:
        super().__init__()
        num_blocks = round(math.log2(upsample_ratio))
        if 2**num_blocks != upsample_ratio:
            raise ValueError(f"decoder upsample ratio must be a power of 2, got {upsample_ratio}")
        widths = [width // 2**i for i in range(num_blocks + 1)]
        self.widths = widths
        self.blocks = nn.ModuleList(UNetBlock(cin, cout, depth) for cin, cout in zip(widths[:-1], widths[1:]))
        self.head = nn.Conv2d(widths[-1], out_channels, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation: trunc-normal convs, kaiming (fan_out) transposed convs, unit norms."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
            elif isinstance(m, nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(m.weight)
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d, nn.modules.batchnorm._BatchNorm)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = 0
        for i, block in enumerate(self.blocks):
            if i < len(features):
                x = x + features[i]
            x = block(x)
        return self.head(x)
