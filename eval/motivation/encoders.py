"""One encoder's weights as the two encoders the paper compares: dense on the zero-outed image (the ``zero_out``
ablation) and sparse (the method)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from os import PathLike
from typing import Iterator

import torch
from torch import Tensor

from spark.model import SparK, SparKConfig, build_spark
from spark.weights import load_checkpoint


@dataclass
class EncoderPair:
    """The same encoder weights, dense (masked pixels zeroed, every position computed) and sparse."""

    dense: SparK
    sparse: SparK

    @property
    def config(self) -> SparKConfig:
        return self.sparse.config

    def sample_visible(self, batch: int, seed: int) -> Tensor:
        """Masks drawn as pretraining draws them (the pretraining grid and ratio), from ``seed``."""
        return self.sparse.sample_visible(batch, generator=torch.Generator().manual_seed(seed))


def encoder_pair(config: SparKConfig, weights: str | PathLike | None = None, seed: int = 0) -> EncoderPair:
    """Both encoders of ``config``'s model with ``weights`` (any layout :func:`spark.weights.load_checkpoint`
    reads), or with one random initialisation drawn from ``seed``.

    The models are in train mode, so every BatchNorm normalises with its batch's statistics as in pretraining,
    without drop path (a random layer drop would add noise that pretraining's inputs do not cause), and return
    every scale of the encoder."""
    config = dataclasses.replace(config.model_config(), drop_path_rate=0.0, hierarchy=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dense = build_spark(dataclasses.replace(config, encoder_mode="zero_out"))
    if weights is not None:
        load_checkpoint(dense, weights)
    sparse = build_spark(dataclasses.replace(config, encoder_mode="sparse"))
    sparse.encoder.load_state_dict(dense.encoder.state_dict())
    return EncoderPair(dense.train(), sparse.train())


def batched_features(model: SparK, images: Tensor, visible: Tensor, batch: int) -> Iterator[list[Tensor]]:
    """The encoder's maps of the masked ``images``, finest first, ``batch`` images at a time: the batch its
    BatchNorms normalise over, and what a caller holds in memory at once."""
    for i in range(0, len(images), batch):
        with torch.no_grad():
            yield model.forward_encoder(images[i:i + batch], visible[i:i + batch])[::-1]
