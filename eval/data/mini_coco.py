"""mini-coco, the COCO stand-in: 1..max_objects Fashion-MNIST objects per photo crop, COCO instance annotations.

Objects are pasted back to front at 15-50% of the image side, so later ones may hide earlier ones; each annotation
describes what remains visible, and an object hidden completely gets no annotation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spark.config import to_dict
from eval.data.build import GENERATOR_VERSION, parallel_map, save_png, staged_dir
from eval.data.coco_format import annotate, coco_dataset
from eval.data.compose import compose_scene
from eval.data.config import MiniCocoConfig
from eval.data.contact_sheet import coco_sheet
from eval.data.manifest import MANIFEST_NAME, generated_manifest
from eval.data.paths import CONTACT_SHEET_NAME, mini_coco_split
from eval.data.seeding import item_rng
from eval.data.sources import FASHION_MNIST_CLASSES, Photo, Sources
from spark.io import write_json

OBJECT_SCALE = (0.15, 0.5)


@dataclass(frozen=True)
class _Scene:
    path: Path
    items: np.ndarray  # (n, 28, 28), painted in this order
    category_ids: list[int]  # COCO ids = Fashion-MNIST label + 1
    rng: np.random.Generator


def build_mini_coco(out_dir: str | Path, cfg: MiniCocoConfig, sources: Sources, *, seed: int,
                    workers: int = 1) -> dict[str, Any]:
    """Generate mini-coco into ``out_dir`` (replaced atomically) and return its manifest."""
    datasets = {}
    with staged_dir(out_dir) as staging:
        for split, count in (("train", cfg.train_images), ("val", cfg.val_images)):
            objects = sources.objects(split)
            target = mini_coco_split(staging, split)
            scenes = []
            for i in range(count):
                rng = item_rng(seed, "mini-coco", split, i)  # picks the objects here, then renders in a worker
                chosen = rng.choice(len(objects.labels), rng.integers(1, cfg.max_objects + 1), replace=False)
                scenes.append(_Scene(target.images / f"{i:06d}.png", objects.images[chosen],
                                     [int(label) + 1 for label in objects.labels[chosen]], rng))
            annotations = parallel_map(_render, (sources.photos, cfg.image_size), scenes, workers)
            images = [{"file_name": s.path.name, "width": cfg.image_size, "height": cfg.image_size} for s in scenes]
            # The generator's package name at version 2 (spark.data, now eval.data), kept: the bytes are v2's.
            description = f"mini-coco {split}, spark.data generator v{GENERATOR_VERSION}, seed {seed}"
            datasets[split] = coco_dataset(images, annotations, FASHION_MNIST_CLASSES, description)
            write_json(target.annotations, datasets[split])
        coco_sheet(datasets["val"], mini_coco_split(staging, "val").images, staging / CONTACT_SHEET_NAME)
        manifest = generated_manifest(staging, dataset="mini-coco", seed=seed, config=to_dict(cfg),
                                      sources=sources.provenance)
        write_json(staging / MANIFEST_NAME, manifest)
    return manifest


def _render(shared: tuple[tuple[Photo, ...], int], scene: _Scene) -> list[dict[str, Any]]:
    photos, size = shared
    pixels, visible = compose_scene(photos, scene.items, size, OBJECT_SCALE, scene.rng)
    save_png(pixels, scene.path)
    return annotate(visible, scene.category_ids)
