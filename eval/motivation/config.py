"""The ``motivation`` section of params.yaml: the images the motivation measurements use and their bootstrap.

The encoder, the input size and the mask are not keys here: they are the model's pretraining section's, so the
measurements are about the inputs pretraining feeds its encoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from spark.config import AtLeast, Section, require


@dataclass(kw_only=True)
class MotivationConfig(Section):
    """Which images, how many, in which batches, and the bootstrap over them."""

    SECTION: ClassVar[str] = "motivation"

    data: str  # an image folder (recursive): held-out images, e.g. the validation split
    arch: str = "resnet50"  # the model, set by the DAG; its pretraining section gives the encoder
    images: Annotated[int, AtLeast(2)] = 256  # a seeded random subset of `data`
    batch: Annotated[int, AtLeast(2)] = 32  # images per forward pass: the BatchNorm batch (train mode, as pretraining)
    bn_layers: Annotated[int, AtLeast(1)] = 3  # the first BatchNorm layers whose input statistics are compared
    bootstrap: Annotated[int, AtLeast(100)] = 1000  # resamples of the images behind each interval
    seed: Annotated[int, AtLeast(0)] = 0  # the image subset, the masks, the random-init encoder and the bootstrap

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.data), "data", "must name an image folder")
