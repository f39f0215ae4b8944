"""The ``pretrain`` section of params.yaml: the SparK recipe, its scale and its run options.

Defaults are the paper's ResNet-50 run (1600 epochs, batch 4096, 224 px, LAMB, base lr 2e-4). Everything is
checked when the section is parsed, before any image is read; the architecture is instantiated on the meta device
to learn its downsample ratio and scales without allocating weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import torch

from spark.config import (
    ConfigError, apply_override, branch_section, changed_keys, load_params, parse_section, require,
)
from spark.encoder import Scales, create_encoder
from spark.engine import CompileSetting, PrecisionName
from spark.masking import num_visible
from spark.model import DensifyNorm, EncoderMode, LossOn, SparK, build_spark

SECTION = "pretrain"
# Keys that may change when a run is resumed: they affect speed or bookkeeping, not the trained weights' recipe.
RESUMABLE_CHANGES = frozenset({"num_workers", "compile", "micro_batch", "save_every", "vis_images", "skip_bad_images"})


@dataclass
class PretrainConfig:
    """One pretraining run. ``lr = base_lr * global_batch / 256``; ``global_batch`` is split across ranks and,
    when ``micro_batch`` is set, accumulated over micro-batches of at most that many images per device."""

    data: str  # an image folder (searched recursively, labels ignored) or a manifest: one path per line
    arch: str = "resnet50"
    input_size: int = 224
    mask_ratio: float = 0.6
    decoder_width: int = 768
    decoder_depth: int = 2
    densify_norm: DensifyNorm = "auto"
    encoder_mode: EncoderMode = "sparse"
    loss_on: LossOn = "masked"
    hierarchy: int | None = None  # encoder scales feeding the decoder, coarsest first (None = all)
    drop_path_rate: float = 0.0
    epochs: int = 1600
    warmup_epochs: int = 40
    global_batch: int = 4096
    micro_batch: int | None = None
    base_lr: float = 2e-4
    weight_decay: float = 0.04  # cosine from weight_decay to weight_decay_end over the run
    weight_decay_end: float = 0.2
    clip: float = 5.0  # max gradient norm; 0 disables clipping
    betas: Literal["auto"] | tuple[float, float] = "auto"  # auto: (0.9, 0.999) for ConvNeXt, (0.9, 0.95) otherwise
    num_workers: int = 8
    precision: PrecisionName = "auto"  # bf16 where the device has it natively, else fp32
    channels_last: bool = False
    compile: CompileSetting = "auto"  # torch.compile; auto: runs long enough to pay (spark.engine.compilation)
    save_every: int = 1  # epochs between checkpoints (the last epoch is always saved)
    seed: int = 0
    deterministic: bool = False
    skip_bad_images: bool = False  # skip and count unreadable images instead of stopping
    vis_data: str | None = None  # images for reconstruction.png (default: spread over ``data``)
    vis_images: int = 8

    def __post_init__(self) -> None:
        require(bool(self.data), "data", "must name an image folder or a manifest file")
        scales = _scales(self.arch)
        ratio = scales.downsample_ratio
        require(self.input_size > 0 and self.input_size % ratio == 0, "input_size",
                f"must be a positive multiple of the downsample ratio {ratio} of '{self.arch}', got {self.input_size}")
        require(0 < self.mask_ratio < 1, "mask_ratio", f"must be in (0, 1), got {self.mask_ratio}")
        cells = (self.input_size // ratio) ** 2
        visible = num_visible((self.input_size // ratio,) * 2, self.mask_ratio)
        require(0 < visible < cells, "mask_ratio",
                f"{self.mask_ratio} keeps {visible} of the {cells} mask cells at {self.input_size} px; "
                f"need 1..{cells - 1}")
        require(self.decoder_width > 0 and self.decoder_width % ratio == 0, "decoder_width",
                f"must be a positive multiple of the downsample ratio {ratio}, got {self.decoder_width}")
        require(self.decoder_depth >= 1, "decoder_depth", f"must be >= 1, got {self.decoder_depth}")
        require(self.hierarchy is None or 1 <= self.hierarchy <= len(scales.indices), "hierarchy",
                f"must be in [1, {len(scales.indices)}] for '{self.arch}', got {self.hierarchy}")
        require(0 <= self.drop_path_rate < 1, "drop_path_rate", f"must be in [0, 1), got {self.drop_path_rate}")
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(0 <= self.warmup_epochs < self.epochs, "warmup_epochs",
                f"must be in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        require(self.global_batch >= 1, "global_batch", f"must be >= 1, got {self.global_batch}")
        require(self.micro_batch is None or self.micro_batch >= 1, "micro_batch",
                f"must be >= 1, got {self.micro_batch}")
        require(self.base_lr > 0, "base_lr", f"must be > 0, got {self.base_lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.weight_decay_end >= 0, "weight_decay_end", f"must be >= 0, got {self.weight_decay_end}")
        require(self.clip >= 0, "clip", f"must be >= 0, got {self.clip}")
        require(self.betas == "auto" or (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)), "betas",
                f"must be 'auto' or two numbers in [0, 1), got {self.betas}")
        require(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        require(self.save_every >= 1, "save_every", f"must be >= 1, got {self.save_every}")
        require(self.vis_images >= 0, "vis_images", f"must be >= 0, got {self.vis_images}")

    @property
    def adam_betas(self) -> tuple[float, float]:
        """The reference betas: (0.9, 0.999) for ConvNeXt, (0.9, 0.95) for ResNets and other convnets."""
        if self.betas != "auto":
            return tuple(self.betas)
        return (0.9, 0.999) if self.arch.startswith("convnext") else (0.9, 0.95)

    @property
    def peak_lr(self) -> float:
        return self.base_lr * self.global_batch / 256

    def check_world_size(self, world_size: int) -> None:
        """The batch must split evenly over the ranks (checked once the job's size is known)."""
        if self.global_batch % world_size:
            raise ConfigError(f"params: {SECTION}.global_batch: {self.global_batch} does not split evenly over "
                              f"{world_size} processes")

    def changed_keys(self, recorded: dict[str, Any]) -> list[str]:
        """Keys whose value differs from the config a checkpoint ``recorded``, except :data:`RESUMABLE_CHANGES`."""
        return changed_keys(self, recorded, RESUMABLE_CHANGES)


def load_pretrain_config(params: str | Path, overrides: Iterable[str] = (), *, model: str | None = None,
                         variant: str | None = None) -> PretrainConfig:
    """The ``pretrain`` section of ``params`` for one DAG branch (``models[model].pretrain``, then ablation
    ``variant``, merged over it; see :func:`spark.config.branch_section`), then dotted overrides."""
    raw = branch_section(load_params(params), SECTION, model, variant)
    for item in overrides:
        apply_override(raw, item)
    return parse_section(raw, SECTION, PretrainConfig)


def _scales(arch: str) -> Scales:
    try:
        with torch.device("meta"):
            return create_encoder(arch)[1]
    except ValueError as err:
        raise ConfigError(f"arch: {err}") from None


def build_model(config: PretrainConfig) -> SparK:
    """The SparK model ``config`` describes, freshly initialised."""
    return build_spark(config.arch, config.input_size, mask_ratio=config.mask_ratio,
                       decoder_width=config.decoder_width, decoder_depth=config.decoder_depth,
                       densify_norm=config.densify_norm, encoder_mode=config.encoder_mode, loss_on=config.loss_on,
                       hierarchy=config.hierarchy, drop_path_rate=config.drop_path_rate)
