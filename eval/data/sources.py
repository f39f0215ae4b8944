"""The real, offline sources of the mini benchmark: Fashion-MNIST objects and bundled background photos.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (or torchvision's download when the config allows);
backgrounds are the photos scikit-image and scikit-learn ship inside their wheels, restricted to loaders that work
without network and images whose license is stated (see DATA.md).
"""
from __future__ import annotations

import gzip
import importlib.util
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from eval.data.errors import DataError
from eval.data.manifest import sha256_file

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_CLASSES = (
    "tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)
INSTALL_COMMAND = f"sudo apt-get update && sudo apt-get install -y {FASHION_MNIST_PACKAGE}"
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# scikit-image loaders that read files bundled in the wheel, limited to photos with a stated license.
_SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
    "stereo_motorcycle", "camera", "coins", "clock", "grass", "gravel", "brick",
)
_MAX_PHOTO_SIDE = 640  # backgrounds are crops resized to <= 128 px; larger originals only cost memory


@dataclass(frozen=True)
class FashionMNIST:
    """One split: ``images`` (n, 28, 28) uint8 with a near-black background, ``labels`` (n,) in [0, 10)."""

    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Photo:
    name: str
    image: Image.Image  # RGB


def find_fashion_mnist(directory: str | Path, download_to: str | Path | None = None) -> Path:
    """The folder holding the four idx files; downloads with torchvision only if ``download_to`` is given."""
    directory = Path(directory)
    if all((directory / name).is_file() for pair in _IDX_FILES.values() for name in pair):
        return directory
    if download_to is None:
        raise DataError(
            f"Fashion-MNIST not found in {directory}; install it with: {INSTALL_COMMAND} "
            f"(or set data.allow_download=true on a machine with internet)"
        )
    return _download_fashion_mnist(Path(download_to))


def _download_fashion_mnist(root: Path) -> Path:
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    try:
        TorchvisionFashionMNIST(str(root), train=True, download=True)
    except (OSError, RuntimeError) as err:
        raise DataError(
            f"Fashion-MNIST download into {root} failed ({err}); install it with: {INSTALL_COMMAND}"
        ) from err
    return root / "FashionMNIST" / "raw"


def read_fashion_mnist(directory: str | Path, split: Literal["train", "test"]) -> FashionMNIST:
    """Decode one split from the gzipped idx files (images: 16-byte header, labels: 8-byte header)."""
    image_file, label_file = (Path(directory) / name for name in _IDX_FILES[split])
    images = _read_idx(image_file, magic=2051, header=16).reshape(-1, 28, 28)
    labels = _read_idx(label_file, magic=2049, header=8)
    if len(images) != len(labels) or labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{image_file} and {label_file} disagree ({len(images)} images, {len(labels)} labels)")
    return FashionMNIST(images, labels)


def _read_idx(path: Path, magic: int, header: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: unreadable ({err}); reinstall with: {INSTALL_COMMAND}") from None
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path}: not an idx file (bad magic number); reinstall with: {INSTALL_COMMAND}")
    return np.frombuffer(raw, np.uint8, offset=header)


def fashion_mnist_provenance(directory: str | Path) -> dict[str, Any]:
    """Package version (when installed by dpkg) and sha256 of each idx file: what the objects were cut from."""
    directory = Path(directory)
    files = {name: sha256_file(directory / name) for pair in _IDX_FILES.values() for name in pair}
    return {"package": FASHION_MNIST_PACKAGE, "version": _debian_version(FASHION_MNIST_PACKAGE), "files": files}


def _debian_version(package: str) -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def background_photos() -> tuple[Photo, ...]:
    """The bundled photos as RGB, longer side capped; loading them touches no network."""
    import skimage.data

    arrays = [(name, getattr(skimage.data, name)()) for name in _SKIMAGE_PHOTOS]
    arrays = [(name, a[0] if isinstance(a, tuple) else a) for name, a in arrays]  # stereo pair -> left view
    images = [(name, Image.fromarray(a)) for name, a in arrays] + _sklearn_sample_images()
    return tuple(Photo(name, _capped(image.convert("RGB"))) for name, image in images)


def _sklearn_sample_images() -> list[tuple[str, Image.Image]]:
    """The JPEGs ``sklearn.datasets.load_sample_images`` decodes, read the same way (PIL) from the same folder,
    without importing scikit-learn, whose import alone takes 2 s of the smoke preset's 15 s budget."""
    spec = importlib.util.find_spec("sklearn")
    locations = spec.submodule_search_locations if spec else None
    paths = sorted(Path(locations[0], "datasets", "images").glob("*.jpg")) if locations else []
    if not paths:
        raise DataError("scikit-learn's sample images (sklearn/datasets/images/*.jpg) not found; "
                        "install it with: pip install scikit-learn")
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append((path.stem, image.copy()))
    return images


def _capped(image: Image.Image) -> Image.Image:
    scale = _MAX_PHOTO_SIDE / max(image.size)
    if scale >= 1:
        return image
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of the Python packages whose code shapes the output bytes."""
    return {name: metadata.version(name) for name in names}


@dataclass(frozen=True)
class Sources:
    """Everything the generators draw from, decoded once and shared by mini-in and mini-coco."""

    fashion_mnist: dict[str, FashionMNIST]  # "train" and "test" splits
    photos: tuple[Photo, ...]
    provenance: dict[str, Any]  # the manifest's "sources" entry

    def objects(self, split: str) -> FashionMNIST:
        """The items a benchmark split draws from: train from Fashion-MNIST train, val from its test split."""
        return self.fashion_mnist["train" if split == "train" else "test"]


def load_sources(fashion_mnist_dir: str | Path) -> Sources:
    """Decode Fashion-MNIST and the background photos, and record where they came from (with package versions)."""
    photos = background_photos()
    provenance = {
        "fashion_mnist": fashion_mnist_provenance(fashion_mnist_dir),
        "backgrounds": [p.name for p in photos],
        "packages": package_versions("numpy", "pillow", "scipy", "scikit-image", "scikit-learn", "pycocotools"),
    }
    splits = {split: read_fashion_mnist(fashion_mnist_dir, split) for split in ("train", "test")}
    return Sources(splits, photos, provenance)
