"""The real offline sources: Fashion-MNIST from the Debian package and the photos bundled with skimage/sklearn."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from eval.data.errors import DataError
from eval.data.sources import (
    FASHION_MNIST_CLASSES, INSTALL_COMMAND, background_photos, find_fashion_mnist, read_fashion_mnist,
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("split, per_class", [("train", 6000), ("test", 1000)])
def test_fashion_mnist_splits_are_balanced(split, per_class):
    data = read_fashion_mnist(find_fashion_mnist(DEBIAN_DIR), split)
    assert data.images.shape == (10 * per_class, 28, 28) and data.images.dtype == np.uint8
    assert np.bincount(data.labels, minlength=len(FASHION_MNIST_CLASSES)).tolist() == [per_class] * 10
    assert data.images[:, 0, 0].max() < 32  # dark background, which the masks rely on


def test_missing_package_error_gives_the_install_command(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist") as err:
        find_fashion_mnist(tmp_path)
    assert str(tmp_path) in str(err.value) and INSTALL_COMMAND in str(err.value)


def test_download_is_used_only_when_allowed(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:  # stands in for the network: torchvision leaves the idx files in <root>/FashionMNIST/raw
        def __init__(self, root, train, download):
            calls.append(root)
            shutil.copytree(DEBIAN_DIR, Path(root, "FashionMNIST", "raw"))

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    with pytest.raises(DataError, match="Fashion-MNIST not found in .*absent; install it with"):
        find_fashion_mnist(tmp_path / "absent")
    assert not calls
    found = find_fashion_mnist(tmp_path / "absent", download_to=tmp_path / "downloads")
    assert calls == [str(tmp_path / "downloads")]
    assert len(read_fashion_mnist(found, "test").labels) == 10000


def test_corrupt_idx_file_is_named(tmp_path):
    for path in DEBIAN_DIR.iterdir():
        shutil.copy(path, tmp_path)
    broken = tmp_path / "t10k-images-idx3-ubyte.gz"
    broken.write_bytes(gzip.compress(b"\x00" * 64))
    with pytest.raises(DataError, match="bad magic number") as err:
        read_fashion_mnist(tmp_path, "test")
    assert str(broken) in str(err.value)


def test_background_photos_are_distinct_rgb_photos():
    photos = background_photos()
    assert len(photos) >= 16 and len({p.name for p in photos}) == len(photos)
    for photo in photos:
        pixels = np.asarray(photo.image)
        assert photo.image.mode == "RGB" and min(photo.image.size) >= 150 and max(photo.image.size) <= 640
        assert pixels.std() > 10, photo.name  # a real photo, not a flat placeholder


def test_sklearn_photos_are_those_of_load_sample_images():
    from sklearn.datasets import load_sample_images

    photos = {p.name: p.image for p in background_photos()}
    samples = load_sample_images()
    for filename, pixels in zip(samples.filenames, samples.images):
        image = photos[Path(filename).stem]
        assert image.size == (pixels.shape[1], pixels.shape[0])  # 640x427: below the size cap, so not resized
        assert np.array_equal(np.asarray(image), pixels)
