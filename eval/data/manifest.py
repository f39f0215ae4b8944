"""manifest.json: what a dataset folder holds and where it came from, so a run can name its exact inputs.

A generated dataset lists the sha256 of every file plus the generator version, seed, config and source versions
that produced it; two builds agree byte for byte exactly when their manifests do. A user-supplied dataset is too
large to hash image by image, so its manifest fingerprints the file listing (paths and sizes) and hashes the
annotation files.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable

from eval.data.build import GENERATOR_VERSION

MANIFEST_NAME = "manifest.json"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def generated_manifest(directory: str | Path, *, dataset: str, seed: int, config: dict[str, Any],
                       sources: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a freshly generated ``directory`` (every file except the manifest itself is hashed)."""
    directory = Path(directory)
    files = {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    return {"dataset": dataset, "generator_version": GENERATOR_VERSION, "seed": seed, "config": config,
            "sources": sources, "file_count": len(files), "files": files}


def external_manifest(root: str | Path, *, dataset: str, subdirs: Iterable[str], hashed: Iterable[str | Path],
                      layout: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a user-supplied dataset under ``root``, read in place: ``subdirs`` are fingerprinted by their
    listing, ``hashed`` files (annotations) by content."""
    root = Path(root)
    count, listing = 0, hashlib.sha256()
    for subdir in sorted(subdirs):
        for dirpath, dirnames, filenames in os.walk(root / subdir, followlinks=True):  # class folders may be links
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                listing.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
                count += 1
    files = {Path(p).relative_to(root).as_posix(): sha256_file(p) for p in hashed}
    return {"dataset": dataset, "root": str(root.resolve()), "layout": layout, "file_count": count,
            "listing_sha256": listing.hexdigest(), "files": files}
