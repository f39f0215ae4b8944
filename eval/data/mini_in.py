"""mini-in, the ImageNet stand-in: ImageFolder ``{train,val}/<class>/*.png`` with one object per photo crop.

Each image holds one Fashion-MNIST item (train items for train and the unlabeled pool, test items for val, none
used twice), scaled to 45-90% of the image, tinted, maybe flipped, at a random position over a random crop of a
real photo. The pool ``unlabeled/*.png`` is flat and shuffled, so neither a folder nor a file name carries a label.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spark.config import to_dict
from eval.data.build import parallel_map, save_png, staged_dir
from eval.data.compose import compose_scene
from eval.data.config import MiniInConfig
from eval.data.contact_sheet import image_folder_sheet
from eval.data.manifest import MANIFEST_NAME, generated_manifest
from eval.data.paths import CONTACT_SHEET_NAME, UNLABELED
from eval.data.seeding import item_rng
from eval.data.sources import FASHION_MNIST_CLASSES, Photo, Sources
from spark.io import write_json

OBJECT_SCALE = (0.45, 0.9)


@dataclass(frozen=True)
class _Image:
    path: Path
    item: np.ndarray
    rng: np.random.Generator


def build_mini_in(out_dir: str | Path, cfg: MiniInConfig, sources: Sources, *, seed: int,
                  workers: int = 1) -> dict[str, Any]:
    """Generate mini-in into ``out_dir`` (replaced atomically) and return its manifest."""
    classes = FASHION_MNIST_CLASSES[: cfg.classes]
    with staged_dir(out_dir) as staging:
        pool: list[tuple[np.ndarray, str, int]] = []  # (item, class, index): unlabeled items, named after shuffling
        for split, per_class in (("train", cfg.train_per_class), ("val", cfg.val_per_class)):
            objects = sources.objects(split)
            spare = cfg.unlabeled_per_class if split == "train" else 0
            images = []
            for label, name in enumerate(classes):
                candidates = np.flatnonzero(objects.labels == label)
                chosen = item_rng(seed, "mini-in", split, name).permutation(candidates)[: per_class + spare]
                images += [_Image(staging / split / name / f"{i:05d}.png", objects.images[j],
                                  item_rng(seed, "mini-in", split, name, i)) for i, j in enumerate(chosen[:per_class])]
                pool += [(objects.images[j], name, i) for i, j in enumerate(chosen[per_class:])]
            parallel_map(_render, (sources.photos, cfg.image_size), images, workers)
        order = item_rng(seed, "mini-in", UNLABELED).permutation(len(pool))
        unlabeled = [_Image(staging / UNLABELED / f"{k:06d}.png", item, item_rng(seed, "mini-in", UNLABELED, name, i))
                     for k, (item, name, i) in enumerate(pool[j] for j in order)]
        parallel_map(_render, (sources.photos, cfg.image_size), unlabeled, workers)
        image_folder_sheet(staging / "train", staging / CONTACT_SHEET_NAME, rows=len(classes))
        manifest = generated_manifest(staging, dataset="mini-in", seed=seed, config=to_dict(cfg),
                                      sources=sources.provenance)
        write_json(staging / MANIFEST_NAME, manifest)
    return manifest


def _render(shared: tuple[tuple[Photo, ...], int], image: _Image) -> None:
    photos, size = shared
    pixels, _ = compose_scene(photos, [image.item], size, OBJECT_SCALE, image.rng)
    save_png(pixels, image.path)
