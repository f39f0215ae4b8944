"""mini-coco: valid COCO for pycocotools, perfect self-evaluation, occlusion-consistent masks, deterministic."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from eval.data.coco_format import coco_index
from eval.data.config import MiniCocoConfig
from eval.data.manifest import MANIFEST_NAME
from eval.data.mini_coco import build_mini_coco
from eval.data.paths import mini_coco_split
from eval.data.sources import find_fashion_mnist, load_sources
from eval.data.validate import validate_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
CFG = MiniCocoConfig(image_size=64, train_images=12, val_images=10, max_objects=6)


@pytest.fixture(scope="module")
def sources():
    return load_sources(find_fashion_mnist("/usr/share/datasets/fashion-mnist"))


@pytest.fixture(scope="module")
def builds(sources, tmp_path_factory):
    """The same config built twice, on two workers and serially."""
    root = tmp_path_factory.mktemp("mini-coco")
    for workers in (2, 1):
        build_mini_coco(root / f"workers{workers}", CFG, sources, seed=0, workers=workers)
    return [root / "workers2", root / "workers1"]


def _load(out, split):
    return json.loads(mini_coco_split(out, split).annotations.read_text())


@pytest.mark.parametrize("split, count", [("train", CFG.train_images), ("val", CFG.val_images)])
def test_every_annotation_is_valid_for_pycocotools(builds, split, count):
    dataset = _load(builds[0], split)
    coco = coco_index(dataset)
    assert len(dataset["images"]) == count
    assert [c["id"] for c in dataset["categories"]] == list(range(1, 11))
    assert len({a["id"] for a in dataset["annotations"]}) == len(dataset["annotations"])
    for image in dataset["images"]:
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert 1 <= len(annotations) <= CFG.max_objects
        masks = np.stack([coco.annToMask(a) for a in annotations])
        assert masks.shape[1:] == (image["height"], image["width"])
        assert masks.sum(axis=0).max() == 1  # occlusion resolved: every pixel belongs to at most one object
        for ann, mask in zip(annotations, masks):
            rows, cols = np.nonzero(mask)
            assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 10
            assert ann["area"] == mask.sum() > 0
            assert ann["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ground_truth_scored_against_itself_has_ap_1(builds, iou_type):
    dataset = _load(builds[0], "val")
    gt = coco_index(dataset)
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                   **({"bbox": a["bbox"]} if iou_type == "bbox" else {"segmentation": a["segmentation"]})}
                  for a in dataset["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(detections), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
    assert evaluator.stats[1] == pytest.approx(1.0)  # AP@.5


def test_two_builds_are_byte_identical_whatever_the_worker_count(builds):
    manifests = [json.loads((out / MANIFEST_NAME).read_text()) for out in builds]
    assert manifests[0] == manifests[1]
    assert manifests[0]["file_count"] == CFG.train_images + CFG.val_images + 2 + 1  # images, 2 JSONs, sheet


def test_mini_coco_passes_the_coco_validator(builds):
    splits = {split: mini_coco_split(builds[0], split) for split in ("train", "val")}
    layout = validate_coco(splits, check_images=100)
    assert layout["val"]["images"] == CFG.val_images and len(layout["categories"]) == 10
