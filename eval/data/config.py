"""The ``data`` section of params.yaml: what ``prepare`` builds (the mini benchmark) or checks (ImageNet, COCO).

``classification`` and ``detection`` pick the source of each task independently, so a user with ImageNet but not
COCO can still run the whole DAG. Generation knobs that change the images (object scales, tints) are not here but
in the generator, versioned by :data:`eval.data.build.GENERATOR_VERSION`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from spark.config import Section, require

FASHION_MNIST_TRAIN_PER_CLASS = 6000
FASHION_MNIST_TEST_PER_CLASS = 1000
FASHION_MNIST_CLASSES = 10


@dataclass
class MiniInConfig:
    """mini-in, the ImageNet stand-in: one Fashion-MNIST object per photo crop, ImageFolder layout, plus an
    ``unlabeled/`` pool for pretraining (no class folders: pretraining cannot see a label)."""

    image_size: int = 128
    classes: int = FASHION_MNIST_CLASSES
    train_per_class: int = 500
    val_per_class: int = 100
    unlabeled_per_class: int = 0  # 0: no pool, pretraining reads train/ (as on ImageNet)

    def __post_init__(self) -> None:
        require(self.image_size >= 32, "image_size", f"must be >= 32, got {self.image_size}")
        require(1 <= self.classes <= FASHION_MNIST_CLASSES, "classes", f"must be in [1, 10], got {self.classes}")
        # Train images draw distinct Fashion-MNIST train items, val images distinct test items: no object repeats.
        require(1 <= self.train_per_class <= FASHION_MNIST_TRAIN_PER_CLASS, "train_per_class",
                f"must be in [1, {FASHION_MNIST_TRAIN_PER_CLASS}], got {self.train_per_class}")
        spare = FASHION_MNIST_TRAIN_PER_CLASS - self.train_per_class  # the pool draws train items train/ did not
        require(0 <= self.unlabeled_per_class <= spare, "unlabeled_per_class",
                f"must be in [0, {spare}] (Fashion-MNIST train items left after train/), "
                f"got {self.unlabeled_per_class}")
        require(1 <= self.val_per_class <= FASHION_MNIST_TEST_PER_CLASS, "val_per_class",
                f"must be in [1, {FASHION_MNIST_TEST_PER_CLASS}], got {self.val_per_class}")


@dataclass
class MiniCocoConfig:
    """mini-coco, the COCO stand-in: 1..max_objects occluding objects per photo crop, COCO instance JSON."""

    image_size: int = 128
    train_images: int = 400
    val_images: int = 100
    max_objects: int = 6

    def __post_init__(self) -> None:
        require(self.image_size >= 32, "image_size", f"must be >= 32, got {self.image_size}")
        require(self.train_images >= 1, "train_images", f"must be >= 1, got {self.train_images}")
        require(self.val_images >= 1, "val_images", f"must be >= 1, got {self.val_images}")
        require(1 <= self.max_objects <= 20, "max_objects", f"must be in [1, 20], got {self.max_objects}")


@dataclass
class ImageNetConfig:
    """A user-supplied ImageNet in ImageFolder layout; ``classes`` and ``check_images`` bound the validation."""

    root: str = "/datasets/imagenet"
    classes: int = 1000
    check_images: int = 100

    def __post_init__(self) -> None:
        require(self.classes >= 1, "classes", f"must be >= 1, got {self.classes}")
        require(self.check_images >= 0, "check_images", f"must be >= 0, got {self.check_images}")


@dataclass
class CocoConfig:
    """A user-supplied COCO 2017 (``annotations/instances_{train,val}2017.json``, ``{train,val}2017/``)."""

    root: str = "/datasets/coco"
    check_images: int = 50

    def __post_init__(self) -> None:
        require(self.check_images >= 0, "check_images", f"must be >= 0, got {self.check_images}")


@dataclass
class DataConfig(Section):
    """Where data lives and how it is made. ``workers`` changes speed only, never the bytes written."""

    SECTION: ClassVar[str] = "data"

    root: str = "data"
    seed: int = 0
    workers: int = 2
    classification: Literal["mini-in", "imagenet"] = "mini-in"
    detection: Literal["mini-coco", "coco"] = "mini-coco"
    fashion_mnist: str = "/usr/share/datasets/fashion-mnist"
    allow_download: bool = False
    mini_in: MiniInConfig = field(default_factory=MiniInConfig)
    mini_coco: MiniCocoConfig = field(default_factory=MiniCocoConfig)
    imagenet: ImageNetConfig = field(default_factory=ImageNetConfig)
    coco: CocoConfig = field(default_factory=CocoConfig)

    def __post_init__(self) -> None:
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        require(self.workers >= 1, "workers", f"must be >= 1, got {self.workers}")
