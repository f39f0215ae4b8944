"""SparK: mask -> sparse encode -> densify -> decode -> loss, for any hierarchical timm convnet.

A :class:`SparKConfig` says what the model is and checks every argument once; :func:`build_spark` builds it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from timm.layers import LayerNorm2d
from torch import Tensor, nn

from .config import AtLeast, Checked, ConfigError, DropPathRate, Range, check_fields, require
from .decoder import LightDecoder
from .densify import Densify
from .encoder import Scales, create_encoder, encoder_scales, uses_layer_norm
from .loss import denormalize_patches, masked_patch_loss
from .masking import num_visible, random_visible, upsample_visible
from .sparse import VisibleMask, sparsify

EncoderMode = Literal["sparse", "zero_out"]
LossOn = Literal["masked", "all"]
DensifyNorm = Literal["auto", "bn", "ln", "none"]


@dataclass(kw_only=True)
class SparKConfig(Checked):
    """A SparK model: the timm encoder, the mask, the densify/decoder widths and the loss. Defaults are the paper's
    ResNet-50 at 224 px. Every value is checked here, the sizes against the encoder's scales (built on the meta
    device, so no weights are allocated); a bad one raises a :class:`~spark.config.ConfigError` naming its key."""

    arch: str = "resnet50"
    input_size: int = 224
    mask_ratio: Annotated[float, Range(0, 1, "()")] = 0.6
    decoder_width: int = 768
    decoder_depth: Annotated[int, AtLeast(1)] = 2  # 3x3 convs per UNet block (2 in the paper)
    densify_norm: DensifyNorm = "auto"  # auto: LayerNorm for ConvNeXt-like encoders, BatchNorm otherwise
    encoder_mode: EncoderMode = "sparse"  # zero_out: the dense encoder on the zero-masked image (the ablation)
    loss_on: LossOn = "masked"
    hierarchy: int | None = None  # encoder scales feeding the decoder, coarsest first (None = all, 1 = single)
    drop_path_rate: DropPathRate = 0.0
    encoder_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # more timm.create_model arguments

    def __post_init__(self) -> None:
        check_fields(self)
        scales = self.scales
        ratio = scales.downsample_ratio
        require(self.input_size > 0 and self.input_size % ratio == 0, "input_size",
                f"must be a positive multiple of the downsample ratio {ratio} of '{self.arch}', got {self.input_size}")
        cells = self.grid[0] * self.grid[1]
        require(0 < self.num_visible < cells, "mask_ratio",
                f"{self.mask_ratio} keeps {self.num_visible} of the {cells} mask cells at {self.input_size} px; "
                f"need 1..{cells - 1}")
        require(self.decoder_width > 0 and self.decoder_width % ratio == 0, "decoder_width",
                f"must be a positive multiple of the downsample ratio {ratio}, got {self.decoder_width}")
        require(self.hierarchy is None or 1 <= self.hierarchy <= len(scales.indices), "hierarchy",
                f"must be in [1, {len(scales.indices)}] for '{self.arch}', got {self.hierarchy}")

    @property
    def scales(self) -> Scales:
        """The encoder's feature scales (from a weightless build on the meta device)."""
        try:
            return encoder_scales(self.arch, **self.encoder_kwargs)
        except ValueError as err:  # an unknown or non-hierarchical architecture
            raise ConfigError(f"arch: {err}") from None
        except TypeError as err:  # an argument timm.create_model does not take
            raise ConfigError(f"encoder_kwargs: {err}") from None

    @property
    def grid(self) -> tuple[int, int]:
        """The mask grid: one cell per pixel of the coarsest feature map."""
        side = self.input_size // self.scales.downsample_ratio
        return side, side

    @property
    def num_visible(self) -> int:
        return num_visible(self.grid, self.mask_ratio)

    def model_config(self) -> SparKConfig:
        """Just the model's fields (a subclass, such as a pretraining run's config, carries more)."""
        return SparKConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SparKConfig)})


class SparK(nn.Module):
    """Sparse masked modeling around a timm encoder.

    ``encoder_mode="sparse"`` is the method: the encoder sees the masked image as a sparse input (every layer
    zeroed at masked positions, norms over visible positions). ``"zero_out"`` is the paper's ablation: the
    unmodified dense encoder on the zero-masked image. Densify and decoder are the same in both modes.
    """

    def __init__(self, config: SparKConfig, encoder: nn.Module, scales: Scales) -> None:
        """Wrap ``encoder`` (a timm trunk with ``forward_intermediates``, of the scales ``scales``) as ``config``
        describes; :func:`build_spark` creates both from the config."""
        super().__init__()
        self.config = config
        self.scales = scales
        # Read every step, so derived once: the config derives them from a meta build of the encoder, which is
        # not cached when encoder_kwargs hold a list.
        self.grid, self.num_visible = config.grid, config.num_visible
        self.visible_mask = VisibleMask()

        self.encoder = sparsify(encoder, self.visible_mask) if config.encoder_mode == "sparse" else encoder
        densify_norm, decoder_width = config.densify_norm, config.decoder_width
        if densify_norm == "auto":
            densify_norm = "ln" if uses_layer_norm(encoder) else "bn"
        coarse_first = list(reversed(scales.channels))[: config.hierarchy or len(scales.indices)]
        self.densify = nn.ModuleList(
            Densify(
                channels,
                decoder_width // 2**i,
                sparsify(_norm(densify_norm, channels), self.visible_mask),
                kernel_size=0 if i == 0 and channels == decoder_width else (1 if i == 0 else 3),
            )
            for i, channels in enumerate(coarse_first)
        )
        self.decoder = LightDecoder(decoder_width, scales.downsample_ratio, depth=config.decoder_depth)

    @property
    def downsample_ratio(self) -> int:
        """Input pixels per mask cell: the encoder's total stride."""
        return self.scales.downsample_ratio

    def sample_visible(self, batch: int, device: torch.device | str | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """A random bool mask (B, 1, h, w), True = visible, with exactly ``num_visible`` cells per image."""
        return random_visible(batch, self.grid, self.num_visible, device=device, generator=generator)

    def forward(self, images: Tensor, visible: Tensor | None = None) -> Tensor:
        """The pretraining loss for ImageNet-normalised ``images``; a random mask is drawn when none is given."""
        if visible is None:
            visible = self.sample_visible(images.shape[0], images.device)
        prediction = self.forward_decoder(self.forward_encoder(images, visible), visible)
        return self.forward_loss(images, prediction, visible)

    def forward_encoder(self, images: Tensor, visible: Tensor) -> list[Tensor]:
        """Encoder maps of the masked image, coarsest first (``hierarchy`` of them: one per densify layer)."""
        self._check_input(images, visible)
        masked = images * upsample_visible(visible, images.shape[-2:]).to(images.dtype)
        with self.visible_mask.use(visible):
            features = self.encoder.forward_intermediates(masked, indices=list(self.scales.indices),
                                                          intermediates_only=True)
        return features[::-1][: len(self.densify)]

    def forward_decoder(self, features: list[Tensor], visible: Tensor) -> Tensor:
        """Densify each map and decode; the prediction is in per-patch normalised pixel space (B, 3, H, W)."""
        with self.visible_mask.use(visible):
            dense = [densify(x, self.visible_mask.at(x.shape[-2:])) for densify, x in zip(self.densify, features)]
        return self.decoder(dense)

    def forward_loss(self, images: Tensor, prediction: Tensor, visible: Tensor) -> Tensor:
        masked_only = self.config.loss_on == "masked"
        return masked_patch_loss(images, prediction, visible, self.downsample_ratio, masked_only=masked_only)

    @torch.no_grad()
    def predict(self, images: Tensor, visible: Tensor) -> Tensor:
        """The full reconstruction in input space (each patch un-normalised with the input patch's statistics)."""
        prediction = self.forward_decoder(self.forward_encoder(images, visible), visible)
        return denormalize_patches(prediction.float(), images.float(), self.downsample_ratio).to(images.dtype)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, visible: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(images, masked_images, reconstruction with the visible patches pasted back)``, in input space."""
        if visible is None:
            visible = self.sample_visible(images.shape[0], images.device)
        shown = upsample_visible(visible, images.shape[-2:])
        reconstruction = self.predict(images, visible)
        return images, images * shown, torch.where(shown, images, reconstruction)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """Encoder weights in plain timm naming: loads into ``timm.create_model(arch)`` but for the head."""
        return self.encoder.state_dict()

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay besides 1-D parameters and biases: the mask tokens."""
        return {name for name, _ in self.named_parameters() if name.endswith("mask_token")}

    def _check_input(self, images: Tensor, visible: Tensor) -> None:
        expected = (images.shape[0], 1, images.shape[-2] // self.downsample_ratio, images.shape[-1] // self.downsample_ratio)
        if images.shape[-2] % self.downsample_ratio or images.shape[-1] % self.downsample_ratio:
            raise ValueError(f"input size {tuple(images.shape[-2:])} is not divisible by the downsample ratio {self.downsample_ratio}")
        if tuple(visible.shape) != expected or visible.dtype != torch.bool:
            raise ValueError(f"visible must be a bool tensor of shape {expected}, got {visible.dtype} {tuple(visible.shape)}")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        return LayerNorm2d(channels, eps=1e-6)
    return nn.Identity()


def build_spark(config: SparKConfig) -> SparK:
    """A freshly initialised SparK around a new timm ``config.arch`` (no pretrained weights are downloaded)."""
    encoder, scales = create_encoder(config.arch, config.drop_path_rate, **config.encoder_kwargs)
    return SparK(config, encoder, scales)
