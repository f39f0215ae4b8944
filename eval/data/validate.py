"""Checks for user-supplied ImageNet (ImageFolder) and COCO 2017, run before any training reads them.

Layout and references are checked in full (every class folder, every image entry of the JSON); image decoding only
on an evenly spread sample, because reading 1.28 M JPEGs would take longer than the check is worth. Every failure is
a :class:`DataError` naming the file or folder and what was expected.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import numpy as np
from PIL import Image

from eval.data.coco_format import coco_index, load_coco_json
from eval.data.errors import DataError
from eval.data.paths import CocoSplit
from spark.images import IMAGE_EXTENSIONS, is_image, spread

_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
T = TypeVar("T")


def images_in(directory: str | Path) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name."""
    return [Path(directory, name) for name in _image_names(directory)]


def _image_names(directory: str | Path) -> list[str]:
    with os.scandir(directory) as entries:
        return sorted(e.name for e in entries if e.is_file() and is_image(e.name))


def check_image(path: str | Path, size: tuple[int, int] | None = None) -> None:
    """Decode ``path`` fully (``verify`` alone misses truncated data); optionally check its (width, height)."""
    try:
        with Image.open(path) as image:
            image.load()
            actual = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None
    if size is not None and actual != tuple(size):
        raise DataError(f"{path}: image is {actual[0]}x{actual[1]} but its annotation says {size[0]}x{size[1]}")


def validate_image_folder(root: str | Path, *, classes: int = 1000, check_images: int = 100,
                          splits: Sequence[str] = ("train", "val")) -> dict[str, Any]:
    """Check ``root/<split>/<class>/<image>`` for each split: ``classes`` non-empty class folders, the same in
    every split, and ``check_images`` readable images spread over them. Returns the class names and counts."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    class_names: list[str] | None = None
    summary: dict[str, Any] = {}
    for split in splits:
        names, images = _scan_split(root, split, classes)
        if class_names is not None and names != class_names:
            first = sorted(set(names) ^ set(class_names))[0]
            raise DataError(f"{root / split}: class folders differ from {root / splits[0]} (e.g. '{first}')")
        class_names = names
        ends = np.cumsum([len(files) for files in images])
        for flat in spread(range(int(ends[-1])), -(-check_images // len(splits))):
            k = int(np.searchsorted(ends, flat, side="right"))
            check_image(root / split / names[k] / images[k][flat - ends[k] + len(images[k])])
        summary[split] = int(ends[-1])
    return {"classes": class_names, **summary}


def _scan_split(root: Path, split: str, classes: int) -> tuple[list[str], list[list[str]]]:
    """Class names and, per class, its image file names (names, not paths: ImageNet has 1.28 M of them)."""
    expected = f"expected ImageFolder layout {root}/{split}/<class>/<image>"
    split_dir = root / split
    if not split_dir.is_dir():
        found = ", ".join(sorted(p.name for p in root.iterdir())[:8]) or "nothing"
        raise DataError(f"{split_dir} is missing; {expected} (found in {root}: {found})")
    loose = _image_names(split_dir)
    if loose:
        raise DataError(f"{split_dir} holds {len(loose)} images directly; {expected}, one folder per class")
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if len(class_dirs) != classes:
        raise DataError(f"{split_dir}: found {len(class_dirs)} class folders, expected {classes}; {expected}")
    images = [_image_names(d) for d in class_dirs]
    for class_dir, files in zip(class_dirs, images):
        if not files:
            raise DataError(f"{class_dir}: class folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return [d.name for d in class_dirs], images


def validate_coco(splits: Mapping[str, CocoSplit], *, check_images: int = 50) -> dict[str, Any]:
    """Check COCO instance splits: each JSON loads with pycocotools, every annotation refers to a known image and
    category, every image entry's file exists, and a spread sample decodes with its masks. Returns counts."""
    summary: dict[str, Any] = {}
    categories: list[str] | None = None
    for name, split in splits.items():
        if not split.images.is_dir():
            raise DataError(f"{split.images}: image folder for {split.annotations.name} not found")
        dataset = load_coco_json(split.annotations)
        _check_references(dataset, split)
        coco = coco_index(dataset)
        for entry in spread(dataset["images"], -(-check_images // len(splits))):
            check_image(split.images / entry["file_name"], (entry["width"], entry["height"]))
            _check_masks(coco, entry, split.annotations)
        names = [c["name"] for c in sorted(dataset["categories"], key=lambda c: c["id"])]
        if categories is not None and names != categories:
            raise DataError(f"{split.annotations}: categories differ from the other split's")
        categories = names
        summary[name] = {"images": len(dataset["images"]), "annotations": len(dataset["annotations"])}
    return {"categories": categories, **summary}


def _check_references(dataset: dict[str, Any], split: CocoSplit) -> None:
    source = split.annotations
    for kind, keys in (("images", _IMAGE_KEYS), ("annotations", _ANNOTATION_KEYS), ("categories", ("id", "name"))):
        for entry in dataset[kind]:
            missing = [key for key in keys if key not in entry]
            if missing:
                raise DataError(f"{source}: an entry of '{kind}' lacks '{missing[0]}' ({str(entry)[:80]})")
    category_ids = {c["id"] for c in dataset["categories"]}
    bad = sorted(i for i in category_ids if not isinstance(i, int) or i < 1)
    if bad:
        raise DataError(f"{source}: category id {bad[0]} is invalid; COCO category ids are integers >= 1")
    image_ids = {image["id"] for image in dataset["images"]}
    for ann in dataset["annotations"]:
        if ann["image_id"] not in image_ids:
            raise DataError(f"{source}: annotation {ann['id']} refers to image_id {ann['image_id']}, not in 'images'")
        if ann["category_id"] not in category_ids:
            raise DataError(f"{source}: annotation {ann['id']} has unknown category_id {ann['category_id']}")
    missing = [image["file_name"] for image in dataset["images"] if not (split.images / image["file_name"]).is_file()]
    if missing:
        raise DataError(f"{source} references {split.images / missing[0]}, which does not exist "
                        f"({len(missing)} of {len(dataset['images'])} images missing)")


def _check_masks(coco: Any, entry: dict[str, Any], source: Path) -> None:
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=entry["id"])):
        if "segmentation" not in ann:  # a box-only annotation has no mask to decode
            continue
        try:
            coco.annToMask(ann)
        except Exception as err:  # pycocotools raises bare TypeError/ValueError/IndexError on malformed segments
            raise DataError(f"{source}: annotation {ann['id']} has an undecodable segmentation ({err})") from None
