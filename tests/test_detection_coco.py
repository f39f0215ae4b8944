"""The COCO harness end to end: ground truth scores AP 100 (mini-coco's RLE masks and COCO-style polygons), and a
few training iterations on mini-coco write metrics, logs, curves and checkpoints, and resume."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("detectron2")

import timm  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.data.detection_utils import annotations_to_instances  # noqa: E402
from detectron2.structures import Instances  # noqa: E402

from eval.detection.__main__ import main  # noqa: E402
from eval.detection.config import DetectionConfig  # noqa: E402
from eval.detection.recipe import VAL_DATASET  # noqa: E402
from eval.detection.train import COCO_METRICS, build_evaluator, register_datasets  # noqa: E402
from spark.data.config import MiniCocoConfig  # noqa: E402
from spark.data.mini_coco import build_mini_coco  # noqa: E402
from spark.data.sources import find_fashion_mnist, load_sources  # noqa: E402

pytestmark = [
    pytest.mark.detectron2,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # pycocotools
]

SIZE = 128
CATEGORIES = {1: ("square", (230, 60, 60)), 2: ("triangle", (60, 200, 60)), 3: ("diamond", (70, 90, 240))}


def shape_polygon(category: int, x: float, y: float, s: float) -> list[float]:
    corners = {
        1: [(x, y), (x + s, y), (x + s, y + s), (x, y + s)],
        2: [(x + s / 2, y), (x + s, y + s), (x, y + s)],
        3: [(x + s / 2, y), (x + s, y + s / 2), (x + s / 2, y + s), (x, y + s / 2)],
    }[category]
    return [float(v) for point in corners for v in point]


def write_shapes_split(root: Path, split: str, count: int, rng: np.random.Generator) -> None:
    """``count`` images of 1-4 non-overlapping coloured shapes (one per quadrant) with polygon masks, as COCO
    2017 stores them (mini-coco stores RLE)."""
    (root / split).mkdir(parents=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        image = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in rng.integers(0, 80, 3)))
        draw = ImageDraw.Draw(image)
        quadrants = rng.permutation(4)[: rng.integers(1, 5)]
        for quadrant in quadrants:
            category = int(rng.integers(1, 4))
            s = float(rng.integers(16, SIZE // 2 - 4))
            x = (quadrant % 2) * SIZE / 2 + float(rng.integers(0, SIZE // 2 - s + 1))
            y = (quadrant // 2) * SIZE / 2 + float(rng.integers(0, SIZE // 2 - s + 1))
            polygon = shape_polygon(category, x, y, s)
            draw.polygon(polygon, fill=CATEGORIES[category][1])
            xs, ys = polygon[0::2], polygon[1::2]
            area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category, "iscrowd": 0,
                "segmentation": [polygon], "area": area,
                "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
            })
        image.save(root / split / f"{image_id:04d}.png")
        images.append({"id": image_id, "file_name": f"{image_id:04d}.png", "width": SIZE, "height": SIZE})
    categories = [{"id": i, "name": name} for i, (name, _) in CATEGORIES.items()]
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))


@pytest.fixture(scope="module")
def shapes_coco(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes-coco")
    rng = np.random.default_rng(0)
    write_shapes_split(root, "train", 2, rng)
    write_shapes_split(root, "val", 6, rng)
    return root


@pytest.fixture(scope="module")
def mini_coco(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini-coco")
    sources = load_sources(find_fashion_mnist("/usr/share/datasets/fashion-mnist"))
    build_mini_coco(root, MiniCocoConfig(image_size=SIZE, train_images=8, val_images=4), sources, seed=0)
    return root


def smoke(root: Path, **overrides) -> dict:
    """The smoke preset (resnet18, 128 px, batch 2, a few iterations) on the mini-coco at ``root``."""
    return {
        "data_root": str(root), "train_json": "annotations/instances_train.json", "train_images": "train",
        "val_json": "annotations/instances_val.json", "val_images": "val", "mask_format": "bitmask", "arch": "resnet18",
        "min_size_train": [96, 128], "max_size_train": 160, "min_size_test": 128, "max_size_test": 160,
        "batch_size": 2, "max_iter": 3, "steps": [2], "warmup_iters": 2, "roi_per_image": 32,
        "proposals_test": 50, "detections_per_image": 10, "score_thresh_test": 0.0, "precise_bn_iters": 1,
        "checkpoint_period": 1000, "num_workers": 0, **overrides,
    }


def train_losses(run: Path) -> dict[int, float]:
    """Iteration -> total loss, from Detectron2's JSON event log."""
    events = (json.loads(line) for line in (run / "events.jsonl").read_text().splitlines())
    return {e["iteration"]: e["total_loss"] for e in events if "total_loss" in e}


@pytest.mark.parametrize(("dataset", "classes"), [("mini_coco", 10), ("shapes_coco", len(CATEGORIES))])
def test_ground_truth_as_predictions_scores_ap_100(dataset, classes, request, tmp_path):
    config = DetectionConfig(
        data_root=str(request.getfixturevalue(dataset)), train_json="annotations/instances_train.json",
        train_images="train", val_json="annotations/instances_val.json", val_images="val",
    )
    assert register_datasets(config) == classes
    evaluator = build_evaluator(VAL_DATASET, tmp_path)
    evaluator.reset()
    for record in DatasetCatalog.get(VAL_DATASET):
        size = (record["height"], record["width"])
        truth = annotations_to_instances(record["annotations"], size, mask_format="bitmask")  # RLE or polygons
        prediction = Instances(size, pred_boxes=truth.gt_boxes, pred_classes=truth.gt_classes,
                               pred_masks=truth.gt_masks.tensor, scores=torch.ones(len(truth)))
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": prediction}])
    results = evaluator.evaluate()
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0)
        assert results[task]["AP50"] == results[task]["AP75"] == pytest.approx(100.0)
        for size in ("APs", "APm", "APl"):  # NaN where no object has that size
            assert math.isnan(results[task][size]) or results[task][size] == pytest.approx(100.0)


@pytest.mark.slow
def test_smoke_training_writes_metrics_and_resumes(mini_coco, tmp_path):
    encoder = timm.create_model("resnet18").state_dict()
    del encoder["fc.weight"], encoder["fc.bias"]
    torch.save(encoder, tmp_path / "encoder.pth")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"detection": smoke(mini_coco, checkpoint_period=2)}))
    run = tmp_path / "run"
    args = ["--params", str(tmp_path / "params.yaml"), "--init", str(tmp_path / "encoder.pth"), "--out", str(run)]

    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    for task in metrics.values():
        assert list(task) == list(COCO_METRICS)
        assert all(v is None or (math.isfinite(v) and 0 <= v <= 100) for v in task.values())
        assert task["AP"] is not None
    assert (run / "model_final.pth").is_file() and (run / "last_checkpoint").read_text() == "model_final.pth"
    assert (run / "config.yaml").is_file() and "Starting training from iteration 0" in (run / "log.txt").read_text()
    losses = train_losses(run)
    assert max(losses) == 2 and all(math.isfinite(v) for v in losses.values())
    assert (run / "dvclive" / "plots" / "metrics" / "total_loss.tsv").is_file()

    # A run killed after its checkpoint at iteration 2 resumes there when the same command runs again.
    (run / "model_final.pth").unlink()
    (run / "last_checkpoint").write_text("model_0000001.pth")
    assert main(args) == 0
    assert "Starting training from iteration 2" in (run / "log.txt").read_text()
    assert max(train_losses(run)) == 2 and (run / "model_final.pth").is_file()

    # Another recipe does not resume those checkpoints: an error, or a fresh start with the old ones set aside.
    assert main([*args, "detection.max_iter=4"]) == 2
    assert main([*args, "--restart-on-change", "detection.max_iter=4"]) == 0
    assert sorted(p.name for p in (run / "stale").iterdir()) == ["last_checkpoint", "model_0000001.pth",
                                                                  "model_final.pth"]
    assert (run / "log.txt").read_text().count("Starting training from iteration 0") == 2
    assert json.loads((run / "params.json").read_text())["max_iter"] == 4
    assert json.loads((run / "metrics.json").read_text())["bbox"]["AP"] is not None


def test_missing_data_fails_before_training(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"detection": smoke(tmp_path / "nowhere")}))
    with pytest.raises(FileNotFoundError, match="instances_train.json not found"):
        main(["--params", str(tmp_path / "params.yaml"), "--init", "scratch", "--out", str(tmp_path / "run")])
