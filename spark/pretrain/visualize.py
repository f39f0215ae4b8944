"""The paper's Fig. 4: input | masked | reconstruction | reconstruction with the visible patches pasted back.

:func:`reconstruction_grid` is pure (model, images, mask -> image); :func:`write_reconstruction` draws a fixed mask
and saves a PNG atomically; :func:`load_model` rebuilds a model with its decoder from any checkpoint that has one.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from spark.config import ConfigError, from_dict
from spark.io import atomic_open, load_torch
from spark.masking import upsample_visible
from spark.model import SparK, SparKConfig, build_spark
from spark.weights import load_checkpoint

from .config import PretrainConfig

COLUMNS = 4


@torch.no_grad()
def reconstruction_grid(model: SparK, images: Tensor, visible: Tensor) -> Image.Image:
    """One row per image of ImageNet-normalised ``images`` under mask ``visible``, in RGB; masked cells black.

    The model runs in eval mode (running BN statistics), so drawing a figure does not change it.
    """
    was_training = model.training
    model.eval()
    try:
        reconstruction = model.predict(images, visible)
        _, masked, pasted = model.reconstruct(images, visible)
    finally:
        model.train(was_training)
    shown = upsample_visible(visible, images.shape[-2:]).float().cpu()
    columns = [_to_rgb(images), _to_rgb(masked) * shown, _to_rgb(reconstruction), _to_rgb(pasted)]
    grid = make_grid(torch.stack(columns, dim=1).flatten(0, 1), nrow=COLUMNS, padding=2, pad_value=1.0)
    return to_pil_image(grid)


def write_reconstruction(model: SparK, images: Tensor, path: str | Path, seed: int = 0) -> None:
    """Save :func:`reconstruction_grid` for a mask drawn from ``seed`` (the same cells every time)."""
    visible = model.sample_visible(len(images), images.device, generator=torch.Generator().manual_seed(seed))
    figure = reconstruction_grid(model, images, visible)
    with atomic_open(path, "wb") as f:
        figure.save(f, format="PNG")


def load_model(checkpoint: str | Path, arch: str | None = None, input_size: int = 224) -> SparK:
    """A model with decoder from our ``checkpoint.pth`` (which records its config) or from the authors' released
    checkpoints with decoder (``arch`` and ``input_size`` required, decoder width as in the paper)."""
    state = load_torch(checkpoint)
    if isinstance(state, dict) and isinstance(state.get("config"), dict):
        model = build_spark(from_dict(PretrainConfig, state["config"], f"{checkpoint}: config").model_config())
    elif arch is not None:
        model = build_spark(SparKConfig(arch=arch, input_size=input_size))
    else:
        raise ConfigError(f"{checkpoint}: records no config; pass the architecture (--arch)")
    if load_checkpoint(model, state).layout == "timm":
        raise ConfigError(f"{checkpoint}: encoder-only weights; a reconstruction needs the decoder too")
    return model


def _to_rgb(images: Tensor) -> Tensor:
    mean = images.new_tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (images.float() * std + mean).clamp(0, 1).cpu()
