"""The ``data`` section of params.yaml: what ``prepare`` builds (the mini benchmark) or checks (ImageNet, COCO, your
own folders).

``classification`` and ``detection`` pick the source of each task independently, so a user with ImageNet but not
COCO can still run the whole DAG (and one with no detection data, ``detection: none``, every stage but Mask R-CNN).
Generation knobs that change the images (object scales, tints) are not here but in the generator, versioned by
:data:`eval.data.build.GENERATOR_VERSION`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

from spark.config import AtLeast, Checked, Range, Section, check_fields, require

FASHION_MNIST_TRAIN_PER_CLASS = 6000
FASHION_MNIST_TEST_PER_CLASS = 1000
FASHION_MNIST_CLASSES = 10


@dataclass
class MiniInConfig(Checked):
    """mini-in, the ImageNet stand-in: one Fashion-MNIST object per photo crop, ImageFolder layout, plus an
    ``unlabeled/`` pool for pretraining (no class folders: pretraining cannot see a label). Train images draw
    distinct Fashion-MNIST train items, val images distinct test items: no object repeats."""

    image_size: Annotated[int, AtLeast(32)] = 128
    classes: Annotated[int, Range(1, FASHION_MNIST_CLASSES)] = FASHION_MNIST_CLASSES
    train_per_class: Annotated[int, Range(1, FASHION_MNIST_TRAIN_PER_CLASS)] = 500
    val_per_class: Annotated[int, Range(1, FASHION_MNIST_TEST_PER_CLASS)] = 100
    unlabeled_per_class: int = 0  # 0: no pool, pretraining reads train/ (as on ImageNet)

    def __post_init__(self) -> None:
        check_fields(self)
        spare = FASHION_MNIST_TRAIN_PER_CLASS - self.train_per_class  # the pool draws train items train/ did not
        require(0 <= self.unlabeled_per_class <= spare, "unlabeled_per_class",
                f"must be in [0, {spare}] (Fashion-MNIST train items left after train/), "
                f"got {self.unlabeled_per_class}")


@dataclass
class MiniCocoConfig(Checked):
    """mini-coco, the COCO stand-in: 1..max_objects occluding objects per photo crop, COCO instance JSON."""

    image_size: Annotated[int, AtLeast(32)] = 128
    train_images: Annotated[int, AtLeast(1)] = 400
    val_images: Annotated[int, AtLeast(1)] = 100
    max_objects: Annotated[int, Range(1, 20)] = 6


@dataclass
class ImageNetConfig(Checked):
    """A user-supplied ImageNet in ImageFolder layout; ``classes`` and ``check_images`` bound the validation."""

    root: str = "/datasets/imagenet"
    classes: Annotated[int, AtLeast(1)] = 1000
    check_images: Annotated[int, AtLeast(0)] = 100


@dataclass
class CocoConfig(Checked):
    """A user-supplied COCO 2017 (``annotations/instances_{train,val}2017.json``, ``{train,val}2017/``)."""

    root: str = "/datasets/coco"
    check_images: Annotated[int, AtLeast(0)] = 50


@dataclass
class OwnConfig(Checked):
    """Your own folders (``spark new-preset`` writes this): ``unlabelled`` images in any nesting, other files beside
    them ignored, for pretraining; ``labelled`` in ImageFolder layout, ``<class>/<image>`` (split here into train
    and val, stratified, by ``seed``) or already split as ``train/<class>/...`` and ``val/<class>/...``. ``prepare``
    decodes every image and lists each unreadable one; ``bad_images`` then says whether the run leaves them out
    (counted in the manifest) or stops."""

    unlabelled: str = ""
    labelled: str = ""
    val_fraction: Annotated[float, Range(0, 1, "()")] = 0.2  # of each class, when labelled/ is not split already
    bad_images: Literal["skip", "stop"] = "stop"


@dataclass
class DataConfig(Section):
    """Where data lives and how it is made. ``workers`` changes speed only, never the bytes written."""

    SECTION: ClassVar[str] = "data"

    root: str = "data"
    seed: Annotated[int, AtLeast(0)] = 0
    workers: Annotated[int, AtLeast(1)] = 2
    classification: Literal["mini-in", "imagenet", "own"] = "mini-in"
    detection: Literal["mini-coco", "coco", "none"] = "mini-coco"  # none: no detection data (no detection_models)
    fashion_mnist: str = "/usr/share/datasets/fashion-mnist"
    allow_download: bool = False
    mini_in: MiniInConfig = field(default_factory=MiniInConfig)
    mini_coco: MiniCocoConfig = field(default_factory=MiniCocoConfig)
    imagenet: ImageNetConfig = field(default_factory=ImageNetConfig)
    coco: CocoConfig = field(default_factory=CocoConfig)
    own: OwnConfig = field(default_factory=OwnConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        for key in ("unlabelled", "labelled"):
            require(self.classification != "own" or bool(getattr(self.own, key)), f"own.{key}",
                    "must name a folder when classification is 'own'")
