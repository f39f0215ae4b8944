"""mini-in: counts and balance as configured, byte-identical rebuilds (any worker count), valid ImageFolder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from eval.data.config import MiniInConfig
from eval.data.manifest import MANIFEST_NAME, sha256_file
from eval.data.mini_in import build_mini_in
from eval.data.sources import FASHION_MNIST_CLASSES, find_fashion_mnist, load_sources
from eval.data.validate import validate_image_folder
from spark.config import ConfigError

CFG = MiniInConfig(image_size=48, classes=10, train_per_class=4, val_per_class=2)


@pytest.fixture(scope="module")
def sources():
    return load_sources(find_fashion_mnist("/usr/share/datasets/fashion-mnist"))


@pytest.fixture(scope="module")
def builds(sources, tmp_path_factory):
    """The same config built twice, once serially and once on two workers."""
    root = tmp_path_factory.mktemp("mini-in")
    for workers in (1, 2):
        build_mini_in(root / f"workers{workers}", CFG, sources, seed=0, workers=workers)
    return [root / "workers1", root / "workers2"]


def test_counts_and_class_balance_follow_the_config(builds):
    out = builds[0]
    for split, per_class in (("train", CFG.train_per_class), ("val", CFG.val_per_class)):
        class_dirs = sorted(p for p in (out / split).iterdir())
        assert [p.name for p in class_dirs] == sorted(FASHION_MNIST_CLASSES[: CFG.classes])
        assert [len(list(p.glob("*.png"))) for p in class_dirs] == [per_class] * CFG.classes
    with Image.open(next((out / "val" / "bag").glob("*.png"))) as image:
        assert image.mode == "RGB" and image.size == (CFG.image_size, CFG.image_size)


def test_two_builds_are_byte_identical_whatever_the_worker_count(builds):
    manifests = [json.loads((out / MANIFEST_NAME).read_text()) for out in builds]
    assert manifests[0] == manifests[1]
    files = [sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) for out in builds]
    assert files[0] == files[1]
    assert all(sha256_file(builds[0] / f) == sha256_file(builds[1] / f) for f in files[0])


def test_manifest_lists_every_file_with_its_hash_and_provenance(builds):
    out = builds[0]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}
    assert set(manifest["files"]) == on_disk and manifest["file_count"] == len(on_disk)
    assert manifest["file_count"] == CFG.classes * (CFG.train_per_class + CFG.val_per_class) + 1  # + contact sheet
    assert all(manifest["files"][f] == sha256_file(out / f) for f in on_disk)
    assert manifest["seed"] == 0 and manifest["config"]["image_size"] == CFG.image_size
    sources = manifest["sources"]
    assert sources["fashion_mnist"]["version"] and len(sources["fashion_mnist"]["files"]) == 4
    assert {"numpy", "pillow", "scikit-image", "scikit-learn"} <= set(sources["packages"])


def test_train_and_val_images_are_distinct_and_varied(builds):
    out = builds[0]
    hashes = [sha256_file(p) for p in sorted(out.rglob("*/*/*.png"))]
    assert len(set(hashes)) == len(hashes)
    pixels = np.stack([np.asarray(Image.open(p)) for p in sorted((out / "train").rglob("*.png"))])
    assert pixels.reshape(len(pixels), -1).std(axis=0).mean() > 20  # backgrounds and objects differ image to image


def test_another_seed_gives_other_images(sources, builds, tmp_path):
    other = build_mini_in(tmp_path / "seed1", CFG, sources, seed=1)
    first = json.loads((builds[0] / MANIFEST_NAME).read_text())
    assert set(other["files"]) == set(first["files"])
    assert all(other["files"][f] != first["files"][f] for f in first["files"])


def test_rebuild_replaces_the_folder_without_stale_files(sources, tmp_path):
    build_mini_in(tmp_path / "d", CFG, sources, seed=0)
    build_mini_in(tmp_path / "d", MiniInConfig(image_size=32, classes=2, train_per_class=1, val_per_class=1), sources,
                  seed=0)
    assert len(list((tmp_path / "d").rglob("*.png"))) == 4 + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no .partial/.old leftovers


def test_mini_in_passes_the_imagenet_validator(builds):
    layout = validate_image_folder(builds[0], classes=CFG.classes, check_images=1000)
    assert layout["train"] == CFG.classes * CFG.train_per_class and layout["val"] == CFG.classes * CFG.val_per_class


def test_the_unlabeled_pool_is_flat_disjoint_and_leaves_train_unchanged(builds, sources, tmp_path):
    pooled = build_mini_in(tmp_path / "pooled", MiniInConfig(**{**CFG.__dict__, "unlabeled_per_class": 3}),
                           sources, seed=0)
    out = tmp_path / "pooled"
    pool = sorted((out / "unlabeled").iterdir())
    assert [p.name for p in pool] == [f"{k:06d}.png" for k in range(3 * CFG.classes)]  # flat: no class names
    train = {f: h for f, h in pooled["files"].items() if f.startswith("train/")}
    assert train == {f: h for f, h in json.loads((builds[0] / MANIFEST_NAME).read_text())["files"].items()
                     if f.startswith("train/")}  # the pool draws other items; train/ is byte-identical
    hashes = {sha256_file(p) for p in pool}
    assert len(hashes) == len(pool) and not hashes & set(pooled["files"][f] for f in train)
    with pytest.raises(ConfigError, match=r"unlabeled_per_class: must be in \[0, 1000\]"):
        MiniInConfig(train_per_class=5000, unlabeled_per_class=1001)
