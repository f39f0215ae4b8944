"""The ``prepare`` stage: build the mini benchmark, or check a user's ImageNet/COCO, and write manifests.

    python -m spark.data.prepare --params params.yaml [data.seed=1 data.workers=4 ...]

User-supplied datasets are read in place; only their manifest and contact sheet go under ``data.root``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from spark.config import load_params, parse_section
from spark.data.coco_format import load_coco_json
from spark.data.config import DataConfig
from spark.data.contact_sheet import coco_sheet, image_folder_sheet
from spark.data.manifest import external_manifest
from spark.data.mini_coco import build_mini_coco
from spark.data.mini_in import build_mini_in
from spark.data.paths import CONTACT_SHEET_NAME, classification_data, detection_data
from spark.data.sources import find_fashion_mnist, load_sources
from spark.data.validate import validate_coco, validate_image_folder
from spark.errors import run_command
from spark.io import write_json


def prepare(cfg: DataConfig) -> list[Path]:
    """Build or check the classification and detection data ``cfg`` selects; returns the manifests written."""
    root = Path(cfg.root)
    if cfg.classification == "imagenet":  # user data first: its problems show up before minutes of generating
        _register_imagenet(cfg)
    if cfg.detection == "coco":
        _register_coco(cfg)
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


def main(argv: Sequence[str] | None = None, prog: str = "python -m spark.data.prepare") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (its 'data' section is read)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="e.g. data.seed=1")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def run() -> None:
        cfg = parse_section(load_params(args.params, args.overrides), "data", DataConfig)
        for manifest in prepare(cfg):
            print(f"prepare: wrote {manifest}")
        print(f"prepare: done in {time.perf_counter() - start:.1f} s")

    return run_command(prog, run)

if __name__ == "__main__":
    sys.exit(main())
