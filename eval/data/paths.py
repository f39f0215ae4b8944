"""Where each prepared dataset lives, so later stages read the same paths ``prepare`` wrote or checked.

Generated datasets live under ``data.root``; user-supplied ImageNet and COCO are read in place and only their
manifest (and contact sheet) is written under ``data.root``; your own folders are read in place through the views
``prepare`` writes under ``data.root/own`` (:mod:`eval.data.own`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eval.data.config import DataConfig
from eval.data.manifest import MANIFEST_NAME

CONTACT_SHEET_NAME = "contact_sheet.png"
UNLABELED = "unlabeled"  # mini-in's pretraining pool
OWN_UNLABELLED = "unlabelled.txt"  # your own unlabelled images that decode, one path per line
NO_DETECTION = "none"


@dataclass(frozen=True)
class ClassificationData:
    """An ImageFolder dataset: ``train/<class>/*``, ``val/<class>/*``, and the images pretraining reads: an
    unlabeled pool where the dataset has one (mini-in, your own folders' list), else ``train`` (ImageNet)."""

    train: Path
    val: Path
    manifest: Path
    pretrain: Path


@dataclass(frozen=True)
class CocoSplit:
    """One COCO split: an instances JSON and the folder its ``file_name`` entries are relative to."""

    annotations: Path
    images: Path


@dataclass(frozen=True)
class DetectionData:
    train: CocoSplit
    val: CocoSplit
    manifest: Path


def mini_coco_split(directory: str | Path, split: str) -> CocoSplit:
    directory = Path(directory)
    return CocoSplit(directory / "annotations" / f"instances_{split}.json", directory / split)


def coco2017_split(root: str | Path, split: str) -> CocoSplit:
    root = Path(root)
    return CocoSplit(root / "annotations" / f"instances_{split}2017.json", root / f"{split}2017")


def classification_data(cfg: DataConfig) -> ClassificationData:
    """The classification dataset ``cfg`` selects (mini-in, ImageNet or your own folders)."""
    if cfg.classification == "mini-in":
        source = out = Path(cfg.root) / "mini-in"
        pretrain = source / (UNLABELED if cfg.mini_in.unlabeled_per_class else "train")
    elif cfg.classification == "own":
        source = out = Path(cfg.root) / "own"
        pretrain = source / OWN_UNLABELLED
    else:
        source, out = Path(cfg.imagenet.root), Path(cfg.root) / "imagenet"
        pretrain = source / "train"
    return ClassificationData(source / "train", source / "val", out / MANIFEST_NAME, pretrain)


def detection_data(cfg: DataConfig) -> DetectionData:
    """The detection dataset ``cfg`` selects (mini-coco or COCO 2017; with ``none``, mini-coco's paths, never
    written: only the manifest saying there is no detection data)."""
    if cfg.detection in ("mini-coco", NO_DETECTION):
        out = Path(cfg.root) / cfg.detection
        return DetectionData(mini_coco_split(out, "train"), mini_coco_split(out, "val"), out / MANIFEST_NAME)
    out = Path(cfg.root) / "coco"
    root = cfg.coco.root
    return DetectionData(coco2017_split(root, "train"), coco2017_split(root, "val"), out / MANIFEST_NAME)


@dataclass(frozen=True)
class PreparedData:
    """Both datasets ``prepare`` writes or checks: what the other stages read (:attr:`Stage.data` names one)."""

    classification: ClassificationData
    detection: DetectionData


def prepared_data(cfg: DataConfig) -> PreparedData:
    return PreparedData(classification_data(cfg), detection_data(cfg))
