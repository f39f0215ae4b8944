"""The COCO harness end to end: ground truth scores AP 100 (mini-coco's RLE masks and COCO-style polygons), the
SparK arm starts from pretraining's encoder.pth (the scratch arm does not, a resumed run from its checkpoint), and a
few training iterations on mini-coco write metrics, predictions, logs, curves and checkpoints, and resume."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import detection_config, require

require("detectron2")

import torch  # noqa: E402
import yaml  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.detection_utils import annotations_to_instances  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from eval.cli import main as spark_cli  # noqa: E402
from eval.detection.backbone import TimmBackbone  # noqa: E402
from eval.detection.config import DetectionConfig  # noqa: E402
from eval.detection.recipes import RECIPES  # noqa: E402
from eval.detection.convert import timm_resnet_to_detectron2  # noqa: E402
from eval.detection.recipe import TRAIN_DATASET, VAL_DATASET  # noqa: E402
from eval.detection.train import (  # noqa: E402
    COCO_METRICS, Trainer, build_evaluator, build_trainer, register_datasets, summarize)
from eval.arms import SCRATCH  # noqa: E402
from spark.config import ConfigError  # noqa: E402
from spark.io import load_torch, save_torch  # noqa: E402
from spark.model import SparKConfig, build_spark  # noqa: E402
from eval.data.config import MiniCocoConfig  # noqa: E402
from eval.data.mini_coco import build_mini_coco  # noqa: E402
from eval.data.sources import find_fashion_mnist, load_sources  # noqa: E402
from helpers import assert_same_weights, counting_reads  # noqa: E402

pytestmark = [
    pytest.mark.detectron2,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # pycocotools
    pytest.mark.usefixtures("isolated_run"),  # trainers log with dvclive, which would use an enclosing DVC repo
]

SIZE = 128
CATEGORIES = {1: ("square", (230, 60, 60)), 2: ("triangle", (60, 200, 60)), 3: ("diamond", (70, 90, 240))}
# COCOeval's object sizes (area in px², both bounds included): a size with no ground truth has no AP.
AREA_RANGES = {"APs": (0, 32**2), "APm": (32**2, 96**2), "APl": (96**2, math.inf)}


def main(argv: list[str]) -> int:
    return spark_cli(["detection", *argv])


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
    """The smoke preset (resnet18 on the ResNet recipe, 128 px, batch 2, a few iterations) on the mini-coco at
    ``root``."""
    return {
        "recipe": "resnet50", "data_root": str(root), "train_json": "annotations/instances_train.json", "train_images": "train",
        "val_json": "annotations/instances_val.json", "val_images": "val", "mask_format": "bitmask", "arch": "resnet18",
        "min_size_train": [96, 128], "max_size_train": 160, "min_size_test": 128, "max_size_test": 160,
        "batch_size": 2, "max_iter": 3, "steps": [2], "warmup_iters": 2, "roi_per_image": 32,
        "proposals_test": 50, "detections_per_image": 10, "score_thresh_test": 0.0, "precise_bn_iters": 1,
        "checkpoint_period": 1000, "num_workers": 0, **overrides,
    }


def events(run: Path) -> list[dict]:
    """Detectron2's JSON event log, one dict per write (NaN where an AP is undefined)."""
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def train_losses(run: Path) -> dict[int, float]:
    """Iteration -> total loss, from Detectron2's JSON event log."""
    return {e["iteration"]: e["total_loss"] for e in events(run) if "total_loss" in e}


def spark_encoder_pth(arch: str, path: Path) -> dict[str, torch.Tensor]:
    """``encoder.pth`` as pretraining writes it, from a SparK whose every encoder tensor (BN statistics too) was moved
    off its init, as training would: a backbone tensor left at any init differs from it."""
    model = build_spark(SparKConfig(arch=arch, input_size=64, decoder_width=64))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, value in model.encoder.state_dict().items():  # views of the model's tensors
            if key.endswith("running_var"):
                value.mul_(0.5 + torch.rand(value.shape, generator=gen))
            elif value.is_floating_point():
                value.add_(0.02 * torch.randn(value.shape, generator=gen))
    save_torch(model.encoder_state_dict(), path)
    return model.encoder_state_dict()


def bottom_up_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The encoder part of the model a trainer trains: Detectron2 ResNet names, or timm names in the timm wrapper."""
    bottom_up = trainer.model.backbone.bottom_up
    return (bottom_up.body.model if isinstance(bottom_up, TimmBackbone) else bottom_up).state_dict()


@pytest.mark.parametrize(("dataset", "classes"), [("mini_coco", 10), ("shapes_coco", len(CATEGORIES))])
def test_ground_truth_as_predictions_scores_ap_100(dataset, classes, request, tmp_path):
    config = detection_config(
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


def rectangle(x: int, y: int, w: int, h: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[y:y + h, x:x + w] = True
    return mask


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


# A hand-computable case with non-contiguous COCO category ids, listed out of order in the json: 3 "three",
# 7 "seven", 12 "twelve" (the model's classes 0, 1, 2: Detectron2 sorts the ids). 2 images of 128 px; every object
# and detection is a 40x40 box (area 1600: "medium"), ground-truth masks are the boxes. Each detection either
# covers a same-category object exactly (IoU 1) or overlaps none (IoU 0), except one mask, so AP is the same at
# every IoU threshold but for that mask.
#   (image, category, x, y)                         detections (image, class, x, y, score, mask height)
GROUND_TRUTH = [(1, 3, 10, 10), (1, 7, 70, 10), (1, 12, 10, 70), (2, 3, 70, 70), (2, 7, 10, 10)]
DETECTIONS = [(1, 0, 10, 10, 0.9, 40), (2, 0, 70, 70, 0.8, 25),  # "three": both found; the second mask 40x25
              (1, 1, 70, 10, 0.95, 40), (1, 1, 70, 70, 0.85, 40), (2, 1, 10, 10, 0.7, 40)]  # "seven": TP, FP, TP
# "twelve": one object, no detection.
#
# COCO AP of a category at one IoU threshold: precision made non-increasing from the right, then averaged at the
# 101 recall levels 0, 0.01, ..., 1 (the first detection reaching each level; 0 past the last one).
# - seven, ranked TP (.95), FP (.85), TP (.7) of 2 objects: recall .5, .5, 1; precision 1, 1/2, 2/3 -> 1, 2/3, 2/3.
#   Levels 0..0.50 (51 of them) get 1, levels 0.51..1 (50) get 2/3: AP = (51 + 50 * 2/3) / 101 = 253/303 = 83.498%.
# - three, boxes: both detections exact: AP 1. Masks: the second covers 40x25 of its 40x40 object, IoU
#   1000/1600 = 0.625, a TP at thresholds .5, .55, .6 (AP 1) and a FP at the 7 from .65: then recall .5, .5 and
#   precision 1, 1/2: levels 0..0.50 get 1, none reaches recall above .5: AP 51/101. Mask AP = (3 + 7 * 51/101)/10
#   = 660/1010 = 65.347%; AP50 = 1; AP75 = 51/101 = 50.495%.
# - twelve: an object and no detection: AP 0 (it counts; only categories without objects are left out).
# AP, AP50, AP75 average the categories: boxes (1 + 253/303 + 0)/3 = 61.166% at every threshold; masks
# (660/1010 + 253/303)/3 = 49.615%, AP50 61.166%, AP75 (51/101 + 253/303)/3 = 44.664%. All objects are medium:
# APm = AP, and APs/APl have no objects (NaN from Detectron2, null in metrics.json).
SEVEN = 253 / 303
EXPECTED = {
    "bbox": {"AP": (1 + SEVEN) / 3, "AP50": (1 + SEVEN) / 3, "AP75": (1 + SEVEN) / 3, "APs": None,
             "APm": (1 + SEVEN) / 3, "APl": None},
    "segm": {"AP": (660 / 1010 + SEVEN) / 3, "AP50": (1 + SEVEN) / 3, "AP75": (51 / 101 + SEVEN) / 3, "APs": None,
             "APm": (660 / 1010 + SEVEN) / 3, "APl": None},
}
EXPECTED_PER_CATEGORY = {"bbox": {"three": 1.0, "seven": SEVEN, "twelve": 0.0},
                         "segm": {"three": 660 / 1010, "seven": SEVEN, "twelve": 0.0}}


def test_coco_ap_of_a_hand_computed_case_with_non_contiguous_category_ids(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    annotations = [{"id": n + 1, "image_id": image, "category_id": category, "bbox": [x, y, 40, 40], "area": 1600,
                    "iscrowd": 0, "segmentation": rle(rectangle(x, y, 40, 40))}
                   for n, (image, category, x, y) in enumerate(GROUND_TRUTH)]
    (tmp_path / "instances.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.png", "width": SIZE, "height": SIZE} for i in (1, 2)],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}, {"id": 12, "name": "twelve"}],
        "annotations": annotations}))
    config = detection_config(data_root=str(tmp_path), train_json="instances.json", train_images="images",
                             val_json="instances.json", val_images="images")
    assert register_datasets(config) == 3  # the model's NUM_CLASSES

    # The mapping between the model's contiguous classes and the json's ids, both ways. Loading the val records
    # (as Trainer.test does, building its data loader before its evaluator) is what puts the mapping into the val
    # metadata; an evaluator used before that would score contiguous ids as COCO ids (AP 0 here).
    records = {r["image_id"]: r for r in DatasetCatalog.get(VAL_DATASET)}
    for name in (TRAIN_DATASET, VAL_DATASET):
        assert MetadataCatalog.get(name).thing_classes == ["three", "seven", "twelve"], name
        assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 12: 2}, name
    assert [a["category_id"] for a in records[1]["annotations"]] == [0, 1, 2]  # the model's targets for 3, 7, 12
    assert [a["category_id"] for a in records[2]["annotations"]] == [0, 1]

    evaluator = build_evaluator(VAL_DATASET, tmp_path / "inference")
    evaluator.reset()
    for image in (1, 2):
        mine = [d for d in DETECTIONS if d[0] == image]
        prediction = Instances(
            (SIZE, SIZE), pred_boxes=Boxes(torch.tensor([[x, y, x + 40, y + 40] for _, _, x, y, _, _ in mine],
                                                        dtype=torch.float32)),
            scores=torch.tensor([d[4] for d in mine]), pred_classes=torch.tensor([d[1] for d in mine]),
            pred_masks=torch.from_numpy(np.stack([rectangle(x, y, 40, h) for _, _, x, y, _, h in mine])))
        evaluator.process([{"image_id": image}], [{"instances": prediction}])
    results = evaluator.evaluate()

    written = json.loads((tmp_path / "inference" / "coco_instances_results.json").read_text())
    assert sorted((r["image_id"], r["category_id"], round(r["score"], 6)) for r in written) == sorted(
        (image, [3, 7][cls], score) for image, cls, _, _, score, _ in DETECTIONS)  # back to the json's ids
    reported = summarize(results)  # what metrics.json holds
    assert reported == {task: {m: v if v is None else pytest.approx(100 * v, abs=1e-9) for m, v in metrics.items()}
                        for task, metrics in EXPECTED.items()}
    for task, per_category in EXPECTED_PER_CATEGORY.items():
        assert {name: results[task][f"AP-{name}"] for name in per_category} == {
            name: pytest.approx(100 * ap, abs=1e-9) for name, ap in per_category.items()}, task


@pytest.mark.parametrize(("arch", "backbone"), [("resnet18", "resnet"), ("convnext_atto", "timm")])
def test_the_spark_arm_starts_from_the_encoder_and_scratch_does_not(arch, backbone, shapes_coco, tmp_path):
    """Were the load skipped, the SparK arm would silently be the scratch arm: the model training starts from holds
    every tensor of encoder.pth (renamed to Detectron2's ResNet names on that path), the scratch one none of them."""
    encoder = spark_encoder_pth(arch, tmp_path / "encoder.pth")
    expected = timm_resnet_to_detectron2(encoder) if backbone == "resnet" else encoder
    config = DetectionConfig.parse({"detection": smoke(shapes_coco, arch=arch, backbone=backbone)})
    (tmp_path / "spark").mkdir()
    (tmp_path / "scratch").mkdir()
    assert_same_weights(bottom_up_state(build_trainer(config, str(tmp_path / "encoder.pth"), tmp_path / "spark")),
                        expected)
    scratch = bottom_up_state(build_trainer(config, SCRATCH, tmp_path / "scratch"))
    assert scratch.keys() == expected.keys()
    same = [k for k, v in scratch.items() if v.is_floating_point() and torch.equal(v, expected[k])]
    assert not same, same


def test_a_resumed_run_starts_from_its_checkpoint_not_the_encoder(shapes_coco, tmp_path):
    """Re-running a killed SparK run continues its training: the encoder must not overwrite what was learnt."""
    spark_encoder_pth("resnet18", tmp_path / "encoder.pth")
    config = DetectionConfig.parse({"detection": smoke(shapes_coco)})
    run = tmp_path / "run"
    run.mkdir()
    killed = build_trainer(config, str(tmp_path / "encoder.pth"), run)
    with torch.no_grad():
        for p in killed.model.parameters():  # stands for the iterations trained before the kill
            p.add_(1.0)
    killed.iter = 1
    killed.checkpointer.save("model_0000001")
    resumed = build_trainer(config, str(tmp_path / "encoder.pth"), run)
    assert resumed.start_iter == 2
    assert_same_weights(resumed.model.state_dict(), killed.model.state_dict())


def assert_valid_metrics(metrics: dict, val: dict) -> None:
    """metrics.json: the six COCO numbers per task as percentages, AP at IoU 0.5 bounding the stricter ones, and null
    exactly for the object sizes the val set has none of."""
    areas = [a["area"] for a in val["annotations"]]
    assert set(metrics) == {"bbox", "segm"}
    for name, task in metrics.items():
        assert list(task) == list(COCO_METRICS), name
        assert all(v is None or 0 <= v <= 100 for v in task.values()), (name, task)
        assert task["AP"] is not None and task["AP"] <= task["AP50"] and task["AP75"] <= task["AP50"], (name, task)
        for size, (low, high) in AREA_RANGES.items():
            assert (task[size] is None) == (not any(low <= a <= high for a in areas)), (name, size)


@pytest.mark.slow
def test_smoke_training_writes_metrics_and_resumes(mini_coco, tmp_path):
    encoder = timm_resnet_to_detectron2(spark_encoder_pth("resnet18", tmp_path / "encoder.pth"))
    params = smoke(mini_coco, checkpoint_period=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"detection": params}))
    run = tmp_path / "run"
    args = ["--params", str(tmp_path / "params.yaml"), "--init", str(tmp_path / "encoder.pth"), "--out", str(run)]

    with counting_reads(tmp_path / "params.yaml") as reads:
        assert main(args) == 0
    assert len(reads) == 1, reads  # the job reads its params once
    val = json.loads((mini_coco / "annotations/instances_val.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert_valid_metrics(metrics, val)
    # They are the final evaluation's, which the event log and the curves (per category too) also hold.
    final = [e for e in events(run) if "bbox/AP" in e]
    assert len(final) == 1  # eval_period 0: once, after the last iteration
    assert metrics == {task: {m: None if math.isnan(final[0][f"{task}/{m}"]) else final[0][f"{task}/{m}"]
                              for m in COCO_METRICS} for task in metrics}
    summary = json.loads((run / "dvclive" / "metrics.json").read_text())
    present = {a["category_id"] for a in val["annotations"]}
    for task in metrics:
        assert summary[task] == {**{m: v for m, v in metrics[task].items() if v is not None},
                                 **{f"AP-{c['name']}": final[0][f"{task}/AP-{c['name']}"]
                                    for c in val["categories"] if c["id"] in present}}, task

    # The predictions scored: detections_per_image per val image (score threshold 0), in the image, of its classes.
    predictions = json.loads((run / "inference" / "coco_instances_results.json").read_text())
    per_image = Counter(p["image_id"] for p in predictions)
    assert per_image == {image["id"]: params["detections_per_image"] for image in val["images"]}
    classes = {c["id"] for c in val["categories"]}
    for p in predictions:
        x, y, w, h = p["bbox"]
        assert p["category_id"] in classes and 0 < p["score"] <= 1 and p["segmentation"]["size"] == [SIZE, SIZE]
        assert 0 <= x <= x + w <= SIZE + 1e-3 and 0 <= y <= y + h <= SIZE + 1e-3, p["bbox"]

    # Training started from the encoder: two AdamW steps at lr <= base_lr moved each backbone weight by about an lr
    # (BN statistics are no weights: they follow the batches).
    checkpoint = load_torch(run / "model_0000001.pth")["model"]
    moved = {k: (checkpoint[f"backbone.bottom_up.{k}"] - v).abs().max().item() for k, v in encoder.items()
             if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert max(moved.values()) < 2 * RECIPES["resnet50"].base_lr, max(moved.items(), key=lambda kv: kv[1])
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
    # ... with its optimizer: iteration 2 at the uninterrupted run's lr, and AdamW's state carried on (3 steps).
    lrs = [e["lr"] for e in events(run) if e.get("iteration") == 2 and "lr" in e]
    assert len(lrs) == 2 and lrs[1] == lrs[0], lrs
    adamw = load_torch(run / "model_final.pth")["trainer"]["_trainer"]["optimizer"]["state"]
    assert {int(state["step"]) for state in adamw.values()} == {3}

    # Another recipe does not resume those checkpoints: an error, or a fresh start with the old ones set aside.
    assert main([*args, "detection.max_iter=4"]) == 2
    assert main([*args, "--restart-on-change", "detection.max_iter=4"]) == 0
    assert sorted(p.name for p in (run / "stale").iterdir()) == ["last_checkpoint", "model_0000001.pth",
                                                                  "model_final.pth"]
    assert (run / "log.txt").read_text().count("Starting training from iteration 0") == 2
    assert json.loads((run / "params.json").read_text())["max_iter"] == 4
    assert_valid_metrics(json.loads((run / "metrics.json").read_text()), val)


def test_missing_data_fails_before_training(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"detection": smoke(tmp_path / "nowhere")}))
    assert main(["--params", str(tmp_path / "params.yaml"), "--init", "scratch", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "error: params: detection.data_root:" in err and "instances_train.json not found" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_val_categories_other_than_train_are_refused(shapes_coco, tmp_path):
    """The evaluator maps the model's contiguous ids back through the val set's ids: they must be the train set's."""
    val = json.loads((shapes_coco / "annotations/instances_val.json").read_text())
    val["categories"] = [{**c, "id": c["id"] + 10} for c in val["categories"]]
    for a in val["annotations"]:
        a["category_id"] += 10
    (tmp_path / "instances_val.json").write_text(json.dumps(val))
    config = detection_config(data_root=str(shapes_coco), train_json="annotations/instances_train.json",
                             train_images="train", val_json=str(tmp_path / "instances_val.json"), val_images="val")
    with pytest.raises(ConfigError, match="params: detection.val_json: .* has other categories than"):
        register_datasets(config)
