"""Your own folders, as they are, made into what the DAG reads.

``unlabelled``: images in any nesting, other files beside them ignored. ``labelled``: ImageFolder layout,
``<class>/<image>`` (split here, stratified, by the data seed) or already split (``train/<class>/...``,
``val/<class>/...``). A folder the DAG cannot use (missing, no images, no class folders, one class, a class too
small to split) is a :class:`DataError` with one line, raised by :func:`scan_folders` before any image is decoded.

:func:`build_own` then decodes every image (a truncated file fails only when fully decoded), lists each unreadable
one with its path, and either stops or leaves them out (``data.own.bad_images``), and writes under
``data.root/own``: ``unlabelled.txt`` (the readable unlabelled images, one absolute path per line: pretraining's
manifest), ``train/<class>/`` and ``val/<class>/`` (links to the readable labelled images: the fine-tuning
ImageFolder), a contact sheet and ``manifest.json`` (counts, classes, every left-out file and why).
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.data.build import parallel_map, staged_dir
from eval.data.config import OwnConfig
from eval.data.contact_sheet import image_folder_sheet
from eval.data.errors import DataError
from eval.data.manifest import MANIFEST_NAME
from eval.data.paths import CONTACT_SHEET_NAME, OWN_UNLABELLED
from eval.data.seeding import item_rng
from spark.images import IMAGE_EXTENSIONS, BadImageError, is_image, read_rgb
from spark.io import write_json, write_text

SPLITS = ("train", "val")
UNSPLIT = "all"  # a labelled folder of class folders, split here


@dataclass(frozen=True)
class Folders:
    """What the folders hold, before any image is decoded: the unlabelled images, and the labelled ones per split
    (``all`` when not split yet) and class."""

    unlabelled: list[Path]
    labelled: dict[str, dict[str, list[Path]]]

    @property
    def classes(self) -> list[str]:
        return list(next(iter(self.labelled.values())))

    def training_images(self, val_fraction: float) -> int:
        """The labelled images fine-tuning trains on: train/'s, or what the split leaves of each class."""
        if UNSPLIT not in self.labelled:
            return sum(map(len, self.labelled["train"].values()))
        return sum(_split_sizes(name, len(paths), val_fraction, Path())[0]
                   for name, paths in self.labelled[UNSPLIT].items())

    def labelled_images(self) -> list[Path]:
        return [path for split in self.labelled.values() for paths in split.values() for path in paths]


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` at any depth (links followed, hidden folders skipped), sorted."""
    found = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, name) for name in names if is_image(name) and not name.startswith(".")]
    return sorted(found)


def scan_folders(cfg: OwnConfig) -> Folders:
    """The layout of ``cfg``'s folders, checked: a :class:`DataError` naming the folder for one the DAG cannot use."""
    unlabelled = Path(cfg.unlabelled)
    if not unlabelled.is_dir():
        raise DataError(f"{unlabelled}: unlabelled folder not found")
    images = find_images(unlabelled)
    if not images:
        raise DataError(f"{unlabelled}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it or its subfolders")
    labelled = Path(cfg.labelled)
    if not labelled.is_dir():
        raise DataError(f"{labelled}: labelled folder not found (expected ImageFolder layout <class>/<image>)")
    if all((labelled / split).is_dir() for split in SPLITS):
        splits = {split: _classes(labelled / split) for split in SPLITS}
        if list(splits["train"]) != list(splits["val"]):
            odd = sorted(set(splits["train"]) ^ set(splits["val"]))[0]
            raise DataError(f"{labelled}: train/ and val/ hold different class folders (e.g. '{odd}')")
    else:
        splits = {UNSPLIT: _classes(labelled)}
        for name, paths in splits[UNSPLIT].items():
            _split_sizes(name, len(paths), cfg.val_fraction, labelled)
    return Folders(images, splits)


def _classes(folder: Path) -> dict[str, list[Path]]:
    """Each class folder's images (at any depth, as ImageFolder reads them), by class name."""
    expected = f"expected ImageFolder layout {folder}/<class>/<image>"
    loose = [p for p in folder.iterdir() if p.is_file() and is_image(p)]
    if loose:
        raise DataError(f"{folder} holds {len(loose)} images directly; {expected}, one folder per class")
    classes = {d.name: find_images(d) for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if not classes:
        raise DataError(f"{folder}: no class folders; {expected}")
    for name, paths in classes.items():
        if not paths:
            raise DataError(f"{folder / name}: class folder holds no images; {expected}")
    if len(classes) == 1:
        raise DataError(f"{folder}: one class folder ('{next(iter(classes))}'); classification needs two or more")
    return classes


def _split_sizes(name: str, count: int, val_fraction: float, folder: Path) -> tuple[int, int]:
    """(train, val) images of a class: at least one of each."""
    if count < 2:
        raise DataError(f"{folder / name}: class '{name}' has {count} readable image(s); the train/val split needs "
                        "at least 2")
    val = min(count - 1, max(1, round(val_fraction * count)))
    return count - val, val


def build_own(out_dir: Path, cfg: OwnConfig, *, seed: int, workers: int) -> dict[str, Any]:
    """Check every image of ``cfg``'s folders and write their views into ``out_dir`` (replaced atomically);
    returns the manifest."""
    folders = scan_folders(cfg)
    paths = folders.unlabelled + folders.labelled_images()
    errors = dict(zip(paths, parallel_map(_unreadable, None, paths, workers)))
    bad = {str(path): error for path, error in errors.items() if error is not None}
    for path, error in bad.items():
        print(f"prepare: unreadable image {path}: {error}", file=sys.stderr)
    if bad and cfg.bad_images == "stop":
        raise DataError(f"{len(bad)} unreadable image(s) in your folders (listed above, e.g. {next(iter(bad))}); "
                        "remove them, or set data.own.bad_images: skip to leave them out")
    if bad:
        print(f"prepare: leaving out {len(bad)} unreadable image(s) (data.own.bad_images: skip)", file=sys.stderr)
    readable = [p for p in folders.unlabelled if str(p) not in bad]
    labelled = {split: {name: [p for p in images if str(p) not in bad] for name, images in classes.items()}
                for split, classes in folders.labelled.items()}
    if UNSPLIT in labelled:
        labelled = _split(labelled[UNSPLIT], cfg, seed)
    with staged_dir(out_dir) as staging:
        write_text(staging / OWN_UNLABELLED, "".join(f"{p.resolve()}\n" for p in readable))
        for split, classes in labelled.items():
            for name, images in classes.items():
                root = Path(cfg.labelled) / (name if UNSPLIT in folders.labelled else f"{split}/{name}")
                for image in images:
                    link = staging / split / name / "__".join(image.relative_to(root).parts)
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(image.resolve())
        image_folder_sheet(staging / "train", staging / CONTACT_SHEET_NAME, rows=min(10, len(folders.classes)))
        manifest = {
            "dataset": "own", "unlabelled_root": str(Path(cfg.unlabelled).resolve()),
            "labelled_root": str(Path(cfg.labelled).resolve()), "seed": seed, "val_fraction": cfg.val_fraction,
            "layout": {"classes": folders.classes, "unlabelled": len(readable),
                       **{split: sum(map(len, labelled[split].values())) for split in SPLITS},
                       "per_class": {split: {n: len(v) for n, v in labelled[split].items()} for split in SPLITS}},
            "left_out": bad, "listing_sha256": _listing(paths),
        }
        write_json(staging / MANIFEST_NAME, manifest)
    return manifest


def _unreadable(_: None, path: Path) -> str | None:
    """Why ``path`` cannot be decoded, or None."""
    try:
        read_rgb(path)
    except BadImageError as err:
        return str(err.__cause__ or err)
    return None


def _split(classes: dict[str, list[Path]], cfg: OwnConfig, seed: int) -> dict[str, dict[str, list[Path]]]:
    """A stratified train/val split of each class's readable images, drawn from ``seed`` and the class name."""
    split: dict[str, dict[str, list[Path]]] = {s: {} for s in SPLITS}
    for name, images in classes.items():
        train, _ = _split_sizes(name, len(images), cfg.val_fraction, Path(cfg.labelled))
        order = item_rng(seed, "own", name).permutation(len(images))
        split["train"][name] = sorted(images[i] for i in order[:train])
        split["val"][name] = sorted(images[i] for i in order[train:])
    return split


def _listing(paths: list[Path]) -> str:
    """A fingerprint of the images read (path and size): a changed folder changes the manifest, and so reruns."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{path.resolve()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()
