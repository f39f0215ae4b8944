"""Contact sheets: one PNG to eyeball a dataset (classification samples per class; COCO images with masks drawn)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from eval.data.build import save_png
from eval.data.coco_format import coco_index
from eval.data.validate import images_in
from spark.images import read_rgb

_LABEL_WIDTH = 96
_PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)], np.uint8)


def image_folder_sheet(split_dir: str | Path, out: str | Path, *, rows: int = 10, per_row: int = 8,
                       tile: int = 64) -> None:
    """The first ``per_row`` images of the first ``rows`` classes of an ImageFolder split, one class per row."""
    classes = sorted(p for p in Path(split_dir).iterdir() if p.is_dir())[:rows]
    font = ImageFont.load_default()
    sheet = Image.new("RGB", (_LABEL_WIDTH + per_row * tile, len(classes) * tile), "white")
    draw = ImageDraw.Draw(sheet)
    for row, class_dir in enumerate(classes):
        draw.text((4, row * tile + tile // 2), class_dir.name, fill="black", font=font, anchor="lm")
        for col, path in enumerate(images_in(class_dir)[:per_row]):
            sheet.paste(ImageOps.fit(read_rgb(path), (tile, tile)), (_LABEL_WIDTH + col * tile, row * tile))
    save_png(np.asarray(sheet), Path(out))


def coco_sheet(dataset: dict[str, Any], image_dir: str | Path, out: str | Path, *, count: int = 16,
               per_row: int = 4, tile: int = 192) -> None:
    """The first ``count`` images of a COCO split with each instance's mask, box and category drawn on it."""
    coco = coco_index(dataset)
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    font = ImageFont.load_default()
    images = dataset["images"][:count]
    sheet = Image.new("RGB", (per_row * tile, -(-len(images) // per_row) * tile), "white")
    for index, entry in enumerate(images):
        with Image.open(Path(image_dir) / entry["file_name"]) as image:
            pixels = np.asarray(image.convert("RGB")).astype(np.float32)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=entry["id"]))
        for k, ann in enumerate(annotations):
            mask = coco.annToMask(ann).astype(bool)
            pixels[mask] = 0.5 * pixels[mask] + 0.5 * _PALETTE[k % len(_PALETTE)]
        drawn = Image.fromarray(pixels.astype(np.uint8))
        scale = tile / max(drawn.size)
        drawn = drawn.resize((round(drawn.width * scale), round(drawn.height * scale)), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(drawn)
        for k, ann in enumerate(annotations):
            x, y, w, h = (v * scale for v in ann["bbox"])
            color = tuple(int(c) for c in _PALETTE[k % len(_PALETTE)])
            draw.rectangle((x, y, x + w, y + h), outline=color)
            draw.text((x + 2, y + 1), names[ann["category_id"]], fill=color, font=font)
        sheet.paste(drawn, ((index % per_row) * tile, (index // per_row) * tile))
    save_png(np.asarray(sheet), Path(out))
