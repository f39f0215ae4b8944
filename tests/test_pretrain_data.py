"""Pretraining data: folders and manifests, the reference augmentation, unreadable images."""
import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms

from spark.config import ConfigError
from spark.engine import DistEnv, train_loader
from spark.engine.data import seeded
from spark.images import spread
from spark.pretrain.data import (
    BadImageError, ImageFiles, collate_images, list_images, load_images, normalize, train_transform,
)


@pytest.fixture
def folder(tmp_path):
    """Six 40x48 images in nested class folders, a text file and a corrupt 'image'."""
    rng = np.random.default_rng(0)
    for i in range(6):
        path = tmp_path / "images" / f"class{i % 2}" / ("deep" if i == 5 else "") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    (tmp_path / "images" / "README.txt").write_text("not an image")
    return tmp_path / "images"


def test_folder_is_searched_recursively_ignoring_labels(folder):
    paths = list_images(folder)
    assert [p.name for p in paths] == ["0.png", "2.png", "4.png", "1.png", "3.png", "5.png"]


def test_manifest_lists_paths_relative_to_itself(folder):
    manifest = folder / "train.txt"
    manifest.write_text("# train split\nclass0/0.png\n\nclass1/deep/5.png\n")
    assert list_images(manifest) == [folder / "class0/0.png", folder / "class1/deep/5.png"]


def test_missing_or_empty_data_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="params: pretrain.data: no such folder or manifest file"):
        list_images(tmp_path / "nope")
    with pytest.raises(ConfigError, match="params: pretrain.data: no images"):
        list_images(tmp_path)


def test_reference_augmentation_output(folder):
    """Workers hand over uint8 pixels; normalising the batch (on the device, in any memory format) gives exactly
    what the reference's per-image ToTensor + Normalize give on the same random draws."""
    reference = transforms.Compose([*train_transform(32).transforms[:-1], transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    pictures = [Image.open(p).convert("RGB") for p in list_images(folder)]
    with seeded(3):
        pixels = torch.stack([train_transform(32)(p) for p in pictures])
    with seeded(3):
        expected = torch.stack([reference(p) for p in pictures])
    assert pixels.shape == (6, 3, 32, 32) and pixels.dtype == torch.uint8
    images = normalize(pixels.contiguous(memory_format=torch.channels_last))
    assert images.dtype == torch.float32 and images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images, expected)
    assert -2.2 < images.min() < 0 < images.max() < 2.7  # ImageNet mean/std normalised
    fixed = load_images(list_images(folder)[:2], 32)
    assert torch.equal(fixed, load_images(list_images(folder)[:2], 32))


def test_reference_augmentation_crops_flips_and_interpolates_as_the_recipe():
    """400 seeded draws on a 240 px square whose red and green pixels are their x and y: least-squares slopes of
    the output's mean row and column give each crop's width and height (negative x slope: flipped). The crops
    cover the recipe's area scale (0.67, 1) and aspect ratios (3/4, 4/3) and stay within them; half are flipped,
    never vertically; and a 64|192 step edge, inside every such crop, overshoots (bicubic; bilinear cannot)."""
    side, size, draws = 240, 32, 400
    x, y = np.meshgrid(np.arange(side), np.arange(side))
    picture = Image.fromarray(np.stack([x, y, np.where(x < side // 2, 64, 192)], -1).astype(np.uint8))
    transform = train_transform(size)
    with seeded(0):
        out = torch.stack([transform(picture) for _ in range(draws)]).double()
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2

    def slope(profile: torch.Tensor) -> torch.Tensor:  # source pixels per output pixel, per draw
        return (profile * k).sum(-1) / (k * k).sum()

    x_slope, y_slope = slope(out[:, 0].mean(1)), slope(out[:, 1].mean(2))
    width, height = x_slope.abs() * size, y_slope.abs() * size
    scale, log_ratio = width * height / side**2, (width / height).log()
    low, high = 0.67, 1.0  # the authors' RandomResizedCrop scale
    tol = 2 / side  # crop sides are rounded to whole pixels
    areas = f"crop areas {scale.min():.3f}..{scale.max():.3f} of the image"
    assert low - tol <= scale.min() and scale.max() <= high + tol, areas
    assert scale.min() < low + (high - low) / 4 and scale.max() > high - (high - low) / 4, areas
    bound = np.log(4 / 3)
    ratios = f"aspect ratios {log_ratio.min().exp():.3f}..{log_ratio.max().exp():.3f}"
    assert log_ratio.abs().max() <= bound + tol, ratios
    assert log_ratio.min() < -bound / 2 and log_ratio.max() > bound / 2, ratios
    flipped = (x_slope < 0).sum().item()
    assert abs(flipped - draws / 2) <= 4 * (draws / 4) ** 0.5, f"{flipped} of {draws} flipped"  # 4 binomial SDs
    assert (y_slope > 0).all(), "flipped vertically"
    edge = out[:, 2].flatten(1)
    smooth = ((edge.max(1).values <= 192) & (edge.min(1).values >= 64)).sum().item()
    assert smooth == 0, f"{smooth} of {draws} crops without overshoot at the edge: not bicubic"


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_image_stops_with_its_path(folder, num_workers):
    bad = folder / "class0" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    dataset = ImageFiles(list_images(folder), train_transform(32))
    loader = train_loader(dataset, batch_size=7, env=DistEnv(), seed=0, num_workers=num_workers,
                          collate_fn=collate_images)
    with pytest.raises(BadImageError, match=f"cannot read image {bad}"):
        list(loader)


def test_skip_bad_images_counts_them(folder):
    (folder / "class0" / "broken.png").write_bytes(b"garbage")
    dataset = ImageFiles(list_images(folder), train_transform(32), skip_bad=True)
    [(images, skipped)] = list(train_loader(dataset, batch_size=7, env=DistEnv(), seed=0, num_workers=0,
                                            collate_fn=collate_images))
    assert images.shape[0] == 6 and skipped == 1


def test_spread_picks_evenly():
    assert spread(list(range(10)), 3) == [0, 3, 6]
    assert spread(list(range(2)), 8) == [0, 1]
