"""The ``pretrain`` section of params.yaml: a SparK model (:class:`~spark.model.SparKConfig`) and its training run.

Defaults are the paper's ResNet-50 run (1600 epochs, batch 4096, 224 px, LAMB, base lr 2e-4). The model checks
its own keys and the run its own, when the section is parsed, before any image is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from spark.config import Above, AtLeast, require
from spark.engine import TrainingConfig
from spark.model import SparKConfig


@dataclass(kw_only=True)
class PretrainConfig(SparKConfig, TrainingConfig):
    """One pretraining run: the model, the data, the SparK recipe (LAMB, cosine lr and weight decay)."""

    SECTION: ClassVar[str] = "pretrain"
    # The monitor's keys too: it only reads the encoder, so a monitoring change never restarts a long pretraining.
    RESUMABLE: ClassVar[frozenset[str]] = TrainingConfig.RESUMABLE | {
        "vis_images", "skip_bad_images", "knn_data", "knn_every", "knn_k", "knn_temperature", "knn_train_images",
        "knn_val_images"}

    data: str  # an image folder (searched recursively, labels ignored) or a manifest: one path per line
    epochs: int = 1600
    warmup_epochs: int = 40
    global_batch: int = 4096
    base_lr: float = 2e-4
    weight_decay: float = 0.04  # cosine from weight_decay to weight_decay_end over the run
    weight_decay_end: Annotated[float, AtLeast(0)] = 0.2
    clip: float = 5.0
    betas: Literal["auto"] | tuple[float, float] = "auto"  # auto: (0.9, 0.999) for ConvNeXt, (0.9, 0.95) otherwise
    skip_bad_images: bool = False  # skip and count unreadable images instead of stopping
    vis_data: str | None = None  # images for reconstruction.png (default: spread over ``data``)
    vis_images: Annotated[int, AtLeast(0)] = 8
    # The k-NN monitor (spark.pretrain.knn): top-1 of the encoder's features on labelled images, every knn_every
    # epochs, before the first and after the last; null knn_data: no monitor.
    knn_data: str | None = None  # an ImageFolder root with train/ and val/ (the fine-tuning data)
    knn_every: Annotated[int, AtLeast(1)] = 1
    knn_k: Annotated[int, AtLeast(1)] = 20  # neighbours that vote
    knn_temperature: Annotated[float, Above(0)] = 0.07  # each neighbour's vote weighs exp(cosine / knn_temperature)
    knn_train_images: Annotated[int | None, AtLeast(1)] = None  # a fixed subset spread over the classes (null: all)
    knn_val_images: Annotated[int | None, AtLeast(1)] = None  # the same for val/

    def __post_init__(self) -> None:
        require(bool(self.data), "data", "must name an image folder or a manifest file")
        require(self.knn_data != "", "knn_data", "must name an ImageFolder root or be null")
        SparKConfig.__post_init__(self)  # every field's constraints (check_fields), then the model's own rules
        self.check_schedule()
        require(self.betas == "auto" or (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)), "betas",
                f"must be 'auto' or two numbers in [0, 1), got {self.betas}")

    @property
    def adam_betas(self) -> tuple[float, float]:
        """The reference betas: (0.9, 0.999) for ConvNeXt, (0.9, 0.95) for ResNets and other convnets."""
        if self.betas != "auto":
            return tuple(self.betas)
        return (0.9, 0.999) if self.arch.startswith("convnext") else (0.9, 0.95)
