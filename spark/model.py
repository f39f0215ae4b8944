"""SparK: mask -> sparse encode -> densify -> decode -> loss, for any hierarchical timm convnet."""
from __future__ import annotations

from typing import Literal

import torch
from timm.layers import LayerNorm2d
from torch import Tensor, nn

from .decoder import LightDecoder
from .densify import Densify
from .encoder import Scales, create_encoder, uses_layer_norm
from .loss import denormalize_patches, masked_patch_loss
from .masking import num_visible, random_active, upsample_active
from .sparse import ActiveMask, sparsify

EncoderMode = Literal["sparse", "zero_out"]
LossOn = Literal["masked", "all"]
DensifyNorm = Literal["auto", "bn", "ln", "none"]


class SparK(nn.Module):
    """Sparse masked modeling around a timm encoder.

    ``encoder_mode="sparse"`` is the method: the encoder sees the masked image as a sparse input (every layer
    zeroed at masked positions, norms over visible positions). ``"zero_out"`` is the paper's ablation: the
    unmodified dense encoder on the zero-masked image. Densify and decoder are the same in both modes.
    """

    def __init__(
        self,
        arch: str,
        encoder: nn.Module,
        scales: Scales,
        input_size: tuple[int, int],
        mask_ratio: float = 0.6,
        decoder_width: int = 768,
        decoder_depth: int = 2,
        densify_norm: DensifyNorm = "auto",
        encoder_mode: EncoderMode = "sparse",
        loss_on: LossOn = "masked",
        hierarchy: int | None = None,
    ) -> None:
        super().__init__()
        ratio = scales.downsample_ratio
        self.arch = arch
        self.input_size = input_size
        self.downsample_ratio = ratio
        self.grid = (input_size[0] // ratio, input_size[1] // ratio)
        self.mask_ratio = mask_ratio
        self.num_visible = num_visible(self.grid, mask_ratio)
        self.encoder_mode = encoder_mode
        self.loss_on = loss_on
        self.scale_indices = list(scales.indices)
        self.hierarchy = hierarchy or len(scales.indices)
        self.active_mask = ActiveMask()

        self.encoder = sparsify(encoder, self.active_mask) if encoder_mode == "sparse" else encoder
        if densify_norm == "auto":
            densify_norm = "ln" if uses_layer_norm(encoder) else "bn"
        coarse_first = list(reversed(scales.channels))[: self.hierarchy]
        self.densify = nn.ModuleList(
            Densify(
                channels,
                decoder_width // 2**i,
                sparsify(_norm(densify_norm, channels), self.active_mask),
                kernel_size=0 if i == 0 and channels == decoder_width else (1 if i == 0 else 3),
            )
            for i, channels in enumerate(coarse_first)
        )
        self.decoder = LightDecoder(decoder_width, ratio, depth=decoder_depth)

    def mask(self, batch: int, device: torch.device | str | None = None, generator: torch.Generator | None = None) -> Tensor:
        """A random bool mask (B, 1, h, w), True = visible, with exactly ``num_visible`` cells per image."""
        return random_active(batch, self.grid, self.num_visible, device=device, generator=generator)

    def forward(self, images: Tensor, active: Tensor | None = None) -> Tensor:
        """The pretraining loss for ImageNet-normalised ``images``; a random mask is drawn when none is given."""
        if active is None:
            active = self.mask(images.shape[0], images.device)
        prediction = self.forward_decoder(self.forward_encoder(images, active), active)
        return self.forward_loss(images, prediction, active)

    def forward_encoder(self, images: Tensor, active: Tensor) -> list[Tensor]:
        """Encoder maps of the masked image, coarsest first (``hierarchy`` of them)."""
        self._check_input(images, active)
        masked = images * upsample_active(active, images.shape[-2:]).to(images.dtype)
        with self.active_mask.use(active):
            features = self.encoder.forward_intermediates(masked, indices=self.scale_indices, intermediates_only=True)
        return features[::-1][: self.hierarchy]

    def forward_decoder(self, features: list[Tensor], active: Tensor) -> Tensor:
        """Densify each map and decode; the prediction is in per-patch normalised pixel space (B, 3, H, W)."""
        with self.active_mask.use(active):
            dense = [densify(x, self.active_mask.at(x.shape[-2:])) for densify, x in zip(self.densify, features)]
        return self.decoder(dense)

    def forward_loss(self, images: Tensor, prediction: Tensor, active: Tensor) -> Tensor:
        return masked_patch_loss(images, prediction, active, self.downsample_ratio, masked_only=self.loss_on == "masked")

    @torch.no_grad()
    def predict(self, images: Tensor, active: Tensor) -> Tensor:
        """The full reconstruction in input space (each patch un-normalised with the input patch's statistics)."""
        prediction = self.forward_decoder(self.forward_encoder(images, active), active)
        return denormalize_patches(prediction.float(), images.float(), self.downsample_ratio).to(images.dtype)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, active: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(images, masked_images, reconstruction with the visible patches pasted back)``, in input space."""
        if active is None:
            active = self.mask(images.shape[0], images.device)
        visible = upsample_active(active, images.shape[-2:])
        reconstruction = self.predict(images, active)
        return images, images * visible, torch.where(visible, images, reconstruction)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """Encoder weights in plain timm naming: loads into ``timm.create_model(arch)`` but for the head."""
        return self.encoder.state_dict()

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay besides 1-D parameters and biases: the mask tokens."""
        return {name for name, _ in self.named_parameters() if name.endswith("mask_token")}

    def _check_input(self, images: Tensor, active: Tensor) -> None:
        expected = (images.shape[0], 1, images.shape[-2] // self.downsample_ratio, images.shape[-1] // self.downsample_ratio)
        if images.shape[-2] % self.downsample_ratio or images.shape[-1] % self.downsample_ratio:
            raise ValueError(f"input size {tuple(images.shape[-2:])} is not divisible by the downsample ratio {self.downsample_ratio}")
        if tuple(active.shape) != expected or active.dtype != torch.bool:
            raise ValueError(f"active must be a bool tensor of shape {expected}, got {active.dtype} {tuple(active.shape)}")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        return LayerNorm2d(channels, eps=1e-6)
    return nn.Identity()


def build_spark(
    arch: str,
    input_size: int | tuple[int, int],
    *,
    mask_ratio: float = 0.6,
    decoder_width: int = 768,
    decoder_depth: int = 2,
    densify_norm: DensifyNorm = "auto",
    encoder_mode: EncoderMode = "sparse",
    loss_on: LossOn = "masked",
    hierarchy: int | None = None,
    drop_path_rate: float = 0.0,
    **timm_kwargs,
) -> SparK:
    """Build SparK around the timm convnet ``arch`` for ``input_size`` images.

    ``hierarchy`` is how many encoder scales feed the decoder, coarsest first (None = all, 1 = single-scale
    ablation); ``decoder_depth`` is the number of 3x3 convs per UNet block (2 in the paper). ``timm_kwargs``
    go to ``timm.create_model``.
    """
    _check_choice("encoder_mode", encoder_mode, EncoderMode)
    _check_choice("loss_on", loss_on, LossOn)
    _check_choice("densify_norm", densify_norm, DensifyNorm)
    if not 0 < mask_ratio < 1:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    encoder, scales = create_encoder(arch, drop_path_rate, **timm_kwargs)
    ratio = scales.downsample_ratio
    if size[0] % ratio or size[1] % ratio:
        raise ValueError(f"input_size {size} is not divisible by the downsample ratio {ratio} of '{arch}'")
    grid = (size[0] // ratio, size[1] // ratio)
    if not 0 < num_visible(grid, mask_ratio) < grid[0] * grid[1]:
        raise ValueError(f"mask_ratio {mask_ratio} leaves {num_visible(grid, mask_ratio)} of {grid[0] * grid[1]} cells visible on the {grid[0]}x{grid[1]} mask grid")
    if hierarchy is not None and not 1 <= hierarchy <= len(scales.indices):
        raise ValueError(f"hierarchy must be in [1, {len(scales.indices)}] for '{arch}', got {hierarchy}")
    return SparK(arch, encoder, scales, size, mask_ratio, decoder_width, decoder_depth, densify_norm, encoder_mode, loss_on, hierarchy)


def _check_choice(name: str, value: str, choices: object) -> None:
    allowed = choices.__args__
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
