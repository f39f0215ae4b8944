"""Validators for user-supplied ImageNet/COCO: accept tiny well-formed fakes, reject broken ones by name, and
``prepare`` registers them in place (manifest and contact sheet only, no copy)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.data.config import CocoConfig, DataConfig, ImageNetConfig
from eval.data.errors import DataError
from eval.data.paths import classification_data, coco2017_split, detection_data
from eval.data.prepare import prepare
from eval.data.validate import validate_coco, validate_image_folder

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
WNIDS = ("n01440764", "n01443537", "n01484850")
COCO_SPLITS = ("train", "val")


def _jpeg(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


@pytest.fixture
def imagenet(tmp_path) -> Path:
    """ImageFolder with 3 classes, 2 train and 1 val image each."""
    root = tmp_path / "imagenet"
    for k, wnid in enumerate(WNIDS):
        for j in range(2):
            _jpeg(root / "train" / wnid / f"{wnid}_{j}.JPEG", seed=k * 10 + j)
        _jpeg(root / "val" / wnid / f"ILSVRC2012_val_{k:08d}.JPEG", seed=100 + k)
    return root


@pytest.fixture
def coco(tmp_path) -> Path:
    """COCO 2017 layout with 2 images per split, one polygon annotation each."""
    root = tmp_path / "coco"
    for split in COCO_SPLITS:
        images, annotations = [], []
        for i in (1, 2):
            name = f"{i:012d}.jpg"
            _jpeg(root / f"{split}2017" / name, (40, 30), seed=i)
            images.append({"id": i, "file_name": name, "width": 40, "height": 30})
            annotations.append({"id": i, "image_id": i, "category_id": 1 + i % 2, "iscrowd": 0, "area": 100.0,
                                "bbox": [5.0, 5.0, 10.0, 10.0], "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]})
        categories = [{"id": 1, "name": "person", "supercategory": "person"},
                      {"id": 2, "name": "bicycle", "supercategory": "vehicle"}]
        _write_json(root / "annotations" / f"instances_{split}2017.json",
                    {"images": images, "annotations": annotations, "categories": categories})
    return root


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _coco_splits(root: Path) -> dict:
    return {split: coco2017_split(root, split) for split in COCO_SPLITS}


def test_image_folder_accepts_a_well_formed_layout(imagenet):
    layout = validate_image_folder(imagenet, classes=3, check_images=100)
    assert layout == {"classes": list(WNIDS), "train": 6, "val": 3}


def test_image_folder_class_count_defaults_to_imagenet_1k(imagenet):
    with pytest.raises(DataError, match="found 3 class folders, expected 1000"):
        validate_image_folder(imagenet)


def test_missing_split_says_what_layout_was_expected(imagenet):
    shutil.rmtree(imagenet / "val")
    with pytest.raises(DataError, match=r"val is missing; expected ImageFolder layout .*/val/<class>/<image>"):
        validate_image_folder(imagenet, classes=3)


def test_flat_val_folder_is_explained(imagenet):
    for image in list((imagenet / "val").rglob("*.JPEG")):
        image.rename(imagenet / "val" / image.name)
    for folder in (imagenet / "val").iterdir():
        if folder.is_dir():
            folder.rmdir()
    with pytest.raises(DataError, match="holds 3 images directly; .*one folder per class"):
        validate_image_folder(imagenet, classes=3)


def test_class_folders_must_agree_between_splits(imagenet):
    (imagenet / "val" / WNIDS[2]).rename(imagenet / "val" / "n99999999")
    with pytest.raises(DataError, match="class folders differ"):
        validate_image_folder(imagenet, classes=3)


def test_empty_class_folder_is_named(imagenet):
    for image in (imagenet / "train" / WNIDS[1]).iterdir():
        image.unlink()
    with pytest.raises(DataError, match=f"{WNIDS[1]}: class folder holds no images"):
        validate_image_folder(imagenet, classes=3)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_is_named(imagenet, damage):
    path = imagenet / "train" / WNIDS[1] / f"{WNIDS[1]}_1.JPEG"
    data = path.read_bytes()
    path.write_bytes(b"not a jpeg" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(DataError, match="unreadable image") as err:
        validate_image_folder(imagenet, classes=3, check_images=100)
    assert str(path) in str(err.value)


def test_coco_accepts_a_well_formed_layout(coco):
    layout = validate_coco(_coco_splits(coco), check_images=10)
    assert layout == {"categories": ["person", "bicycle"], "train": {"images": 2, "annotations": 2},
                      "val": {"images": 2, "annotations": 2}}


def test_missing_image_file_is_named(coco):
    missing = coco / "val2017" / f"{2:012d}.jpg"
    missing.unlink()
    with pytest.raises(DataError, match=r"instances_val2017.json references .* which does not exist \(1 of 2") as err:
        validate_coco(_coco_splits(coco))
    assert str(missing) in str(err.value)


@pytest.mark.parametrize("field, value, message", [
    ("image_id", 99, "annotation 1 refers to image_id 99, not in 'images'"),
    ("category_id", 7, "annotation 1 has unknown category_id 7"),
    ("segmentation", [[1, 2, "x"]], "annotation 1 has an undecodable segmentation"),
])
def test_dangling_or_broken_annotation_is_named(coco, field, value, message):
    path = coco / "annotations" / "instances_train2017.json"
    dataset = json.loads(path.read_text())
    dataset["annotations"][0][field] = value
    _write_json(path, dataset)
    with pytest.raises(DataError, match=message) as err:
        validate_coco(_coco_splits(coco), check_images=10)
    assert str(path) in str(err.value)


def test_entry_missing_a_required_key_is_named(coco):
    path = coco / "annotations" / "instances_val2017.json"
    dataset = json.loads(path.read_text())
    del dataset["images"][1]["height"]
    _write_json(path, dataset)
    with pytest.raises(DataError, match="an entry of 'images' lacks 'height'"):
        validate_coco(_coco_splits(coco))


def test_image_size_must_match_its_entry(coco):
    _jpeg(coco / "train2017" / f"{1:012d}.jpg", (41, 30))
    with pytest.raises(DataError, match="image is 41x30 but its annotation says 40x30"):
        validate_coco(_coco_splits(coco), check_images=10)


@pytest.mark.parametrize("content, message", [
    (None, "COCO annotation file not found"), ("{", "not valid JSON"), ('{"images": []}', "no 'annotations' list"),
])
def test_unusable_annotation_file_is_named(coco, content, message):
    path = coco / "annotations" / "instances_val2017.json"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        validate_coco(_coco_splits(coco))
    assert str(path) in str(err.value)


def test_category_ids_start_at_one(coco):
    path = coco / "annotations" / "instances_val2017.json"
    dataset = json.loads(path.read_text())
    dataset["categories"][0]["id"] = 0
    _write_json(path, dataset)
    with pytest.raises(DataError, match="category id 0 is invalid"):
        validate_coco(_coco_splits(coco))


def test_prepare_registers_user_datasets_in_place(imagenet, coco, tmp_path):
    cfg = DataConfig(root=str(tmp_path / "data"), classification="imagenet", detection="coco",
                     fashion_mnist=str(tmp_path / "no-fashion-mnist"),  # not needed for user datasets
                     imagenet=ImageNetConfig(root=str(imagenet), classes=3), coco=CocoConfig(root=str(coco)))
    manifests = prepare(cfg)
    assert manifests == [classification_data(cfg).manifest, detection_data(cfg).manifest]
    assert classification_data(cfg).train == imagenet / "train" and detection_data(cfg).val.images == coco / "val2017"
    written = sorted(p.relative_to(tmp_path / "data").as_posix() for p in (tmp_path / "data").rglob("*"))
    assert written == ["coco", "coco/contact_sheet.png", "coco/manifest.json",
                       "imagenet", "imagenet/contact_sheet.png", "imagenet/manifest.json"]  # nothing copied
    imagenet_manifest = json.loads(manifests[0].read_text())
    assert imagenet_manifest["file_count"] == 9 and imagenet_manifest["layout"]["classes"] == list(WNIDS)
    coco_manifest = json.loads(manifests[1].read_text())
    assert coco_manifest["file_count"] == 4
    assert set(coco_manifest["files"]) == {"annotations/instances_train2017.json", "annotations/instances_val2017.json"}
    _jpeg(imagenet / "val" / WNIDS[0] / "extra.JPEG")  # the listing fingerprint notices a changed dataset
    prepare(cfg)
    assert json.loads(manifests[0].read_text())["listing_sha256"] != imagenet_manifest["listing_sha256"]
