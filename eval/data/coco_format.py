"""The COCO instance format as the mini benchmark writes it and the validators read it.

Masks are stored as compressed RLE (``iscrowd: 0``), which keeps an occluded object's visible part exact, holes
included; bbox and area are computed by pycocotools from that same RLE, so the three always agree. (Detectron2 reads
RLE instance masks with ``INPUT.MASK_FORMAT=bitmask``.)
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from eval.data.errors import DataError


def annotate(masks: Iterable[np.ndarray], category_ids: Iterable[int]) -> list[dict[str, Any]]:
    """Instance annotations (without ids) for the non-empty ``masks``; fully hidden objects are dropped."""
    annotations = []
    for mask, category_id in zip(masks, category_ids):
        if not mask.any():
            continue
        rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        annotations.append({
            "category_id": int(category_id),
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": 0,
        })
    return annotations


def coco_dataset(images: Sequence[dict[str, Any]], annotations: Sequence[Sequence[dict[str, Any]]],
                 categories: Sequence[str], description: str) -> dict[str, Any]:
    """A COCO instances dict; ``annotations[i]`` belong to ``images[i]``; ids are assigned from 1 in order."""
    coco_images: list[dict[str, Any]] = []
    coco_annotations: list[dict[str, Any]] = []
    for image_id, (image, image_annotations) in enumerate(zip(images, annotations), start=1):
        coco_images.append({"id": image_id, **image})
        for ann in image_annotations:
            coco_annotations.append({"id": len(coco_annotations) + 1, "image_id": image_id, **ann})
    return {
        "info": {"description": description},
        "licenses": [],
        "images": coco_images,
        "annotations": coco_annotations,
        "categories": [{"id": i, "name": name, "supercategory": "object"} for i, name in enumerate(categories, 1)],
    }


def coco_index(dataset: dict[str, Any]) -> COCO:
    """A pycocotools index over an in-memory dataset, without its progress prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read an instances JSON; a missing, unparsable or non-COCO file names itself in the error."""
    path = Path(path)
    try:
        dataset = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: COCO annotation file not found") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset, dict) or not isinstance(dataset.get(key), list):
            raise DataError(f"{path}: not a COCO instances file (no '{key}' list)")
    return dataset
