"""The ``prepare`` stage: build the mini benchmark, or check a user's ImageNet/COCO or own folders, and write
manifests.

    spark prepare --params params.yaml [data.seed=1 data.workers=4 ...]

User-supplied datasets are read in place; only their manifest and contact sheet (and, for your own folders, the
views of :mod:`eval.data.own`) go under ``data.root``.
"""
from __future__ import annotations

from pathlib import Path

from eval.data.coco_format import load_coco_json
from eval.data.config import DataConfig
from eval.data.contact_sheet import coco_sheet, image_folder_sheet
from eval.data.manifest import external_manifest
from eval.data.mini_coco import build_mini_coco
from eval.data.mini_in import build_mini_in
from eval.data.own import build_own
from eval.data.paths import CONTACT_SHEET_NAME, NO_DETECTION, classification_data, detection_data
from eval.data.sources import find_fashion_mnist, load_sources
from eval.data.validate import validate_coco, validate_image_folder
from spark.io import write_json


def prepare(cfg: DataConfig) -> list[Path]:
    """Build or check the classification and detection data ``cfg`` selects; returns the manifests written."""
    root = Path(cfg.root)
    if cfg.classification == "imagenet":  # user data first: its problems show up before minutes of generating
        _register_imagenet(cfg)
    if cfg.classification == "own":
        build_own(root / "own", cfg.own, seed=cfg.seed, workers=cfg.workers)
    if cfg.detection == "coco":
        _register_coco(cfg)
    if cfg.detection == NO_DETECTION:
        write_json(detection_data(cfg).manifest, {"dataset": NO_DETECTION})
    if cfg.classification == "mini-in" or cfg.detection == "mini-coco":
        download_to = root / "downloads" if cfg.allow_download else None
        sources = load_sources(find_fashion_mnist(cfg.fashion_mnist, download_to))
        if cfg.classification == "mini-in":
            build_mini_in(root / "mini-in", cfg.mini_in, sources, seed=cfg.seed, workers=cfg.workers)
        if cfg.detection == "mini-coco":
            build_mini_coco(root / "mini-coco", cfg.mini_coco, sources, seed=cfg.seed, workers=cfg.workers)
    return [classification_data(cfg).manifest, detection_data(cfg).manifest]


def _register_imagenet(cfg: DataConfig) -> None:
    data = classification_data(cfg)
    layout = validate_image_folder(cfg.imagenet.root, classes=cfg.imagenet.classes,
                                   check_images=cfg.imagenet.check_images)
    image_folder_sheet(data.train, data.manifest.parent / CONTACT_SHEET_NAME)
    write_json(data.manifest, external_manifest(cfg.imagenet.root, dataset="imagenet", subdirs=("train", "val"),
                                                hashed=(), layout=layout))


def _register_coco(cfg: DataConfig) -> None:
    data = detection_data(cfg)
    splits = {"train": data.train, "val": data.val}
    layout = validate_coco(splits, check_images=cfg.coco.check_images)
    coco_sheet(load_coco_json(data.val.annotations), data.val.images, data.manifest.parent / CONTACT_SHEET_NAME)
    write_json(data.manifest, external_manifest(
        cfg.coco.root, dataset="coco", subdirs=[s.images.name for s in splits.values()],
        hashed=[s.annotations for s in splits.values()], layout=layout))
