"""The k-NN monitor: the weighted vote, the features it votes with, and the fixed labelled subsets it reads."""
import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, TensorDataset

from spark.engine import DistEnv, Precision
from spark.model import SparKConfig, build_spark
from spark.pretrain import PretrainConfig
from spark.pretrain.knn import KnnMonitor, encoder_features, knn_top1


def unit(*angles_deg: float) -> torch.Tensor:
    """2-D unit vectors at the given angles: cosines between them are known exactly."""
    angles = torch.tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=1).float()


# One validation image at 0 deg; its nearest training image (8 deg, cosine 0.990) is of class 1, the next two
# (25 deg, cosine 0.906) of class 0, a far one (90 deg) of class 2.
TRAIN, TRAIN_LABELS = unit(8, 25, -25, 90), torch.tensor([1, 0, 0, 2])
VAL = unit(0)


@pytest.mark.parametrize("k, temperature, winner", [
    (1, 0.07, 1),
    (3, 0.07, 1),  # exp(0.990 / 0.07) = 1.9e6 outweighs 2 exp(0.906 / 0.07) = 0.85e6
    (3, 1.0, 0),  # exp(0.990) = 2.7 does not outweigh 2 exp(0.906) = 4.9: a flat vote counts heads
    (3, 1e-3, 1),  # exp(990) overflows float32: the vote must not become a tie of infinities (won by class 0)
    (100, 1.0, 0),  # k beyond the 4 training images: all of them vote (the far class-2 one with weight 1.0)
])
def test_weighted_vote(k, temperature, winner):
    for label in range(3):
        expected = 100.0 if label == winner else 0.0
        assert knn_top1(TRAIN, TRAIN_LABELS, VAL, torch.tensor([label]), k, temperature) == expected, label


def test_a_tied_vote_goes_to_the_lower_class():
    train, val = unit(10, -10), unit(0)
    for labels in ([0, 1], [1, 0]):
        assert knn_top1(train, torch.tensor(labels), val, torch.tensor([0]), 2, 0.07) == 100.0
        assert knn_top1(train, torch.tensor(labels), val, torch.tensor([1]), 2, 0.07) == 0.0


def test_separable_features_score_100_and_random_ones_chance():
    classes, dim = 10, 64
    generator = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(classes, dim, generator=generator), dim=1)
    train_labels, val_labels = torch.arange(2000) % classes, torch.arange(1000) % classes

    def features(labels: torch.Tensor, spread: float) -> torch.Tensor:
        noise = torch.randn(len(labels), dim, generator=generator)
        return F.normalize(centres[labels] * (spread < 1) + spread * noise, dim=1)

    separable = knn_top1(features(train_labels, 0.05), train_labels, features(val_labels, 0.05), val_labels, 20, 0.07)
    assert separable == 100.0
    chance = knn_top1(features(train_labels, 1.0), train_labels, features(val_labels, 1.0), val_labels, 20, 0.07)
    assert 6 <= chance <= 14, chance  # 10 % +- 4 binomial standard deviations over 1000 images


@pytest.mark.parametrize("mode", ["sparse", "zero_out"])
def test_features_are_the_dense_encoders_pooled_normalised_coarsest_map(mode):
    """The sparse encoder with every cell visible is the plain timm encoder with the same weights (eval mode: BN
    running statistics), as is the zero_out ablation's dense encoder; the features are its last map, averaged
    over space and L2-normalised, in the loader's order."""
    model = build_spark(SparKConfig(arch="test_resnet", input_size=64, decoder_width=64, encoder_mode=mode))
    with torch.no_grad():
        for name, buffer in model.named_buffers():  # running statistics unlike a fresh BN's, so eval mode shows
            if name.endswith("running_mean"):
                buffer.normal_()
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2)
    model.train()
    timm_model = timm.create_model("test_resnet", num_classes=0).eval()
    timm_model.load_state_dict(model.encoder_state_dict(), strict=False)
    images = torch.randn(5, 3, 64, 64)
    loader = DataLoader(TensorDataset(images, torch.zeros(5)), batch_size=2)

    features = encoder_features(model, loader, DistEnv(), Precision())
    assert model.training  # mode restored
    with torch.no_grad():
        expected = F.normalize(timm_model.forward_features(images).mean(dim=(2, 3)), dim=1)
    assert features.shape == (5, timm_model.num_features)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


def write_image_folder(root, split: str, per_class: list[int]) -> None:
    """Flat grey images whose level, 20 * class + 3 * index, says which they are."""
    for label, count in enumerate(per_class):
        for i in range(count):
            path = root / split / f"class{label}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 20 * label + 3 * i, dtype=np.uint8)).save(path)


def identities(loader: DataLoader) -> list[tuple[int, int]]:
    """(class, index) of each image a loader yields, read back from its grey level."""
    levels = [round((image[0].mean().item() * IMAGENET_DEFAULT_STD[0] + IMAGENET_DEFAULT_MEAN[0]) * 255)
              for images, _ in loader for image in images]
    return [(level // 20, level % 20 // 3) for level in levels]


def test_fixed_subsets_spread_over_the_classes_and_shard_over_ranks(tmp_path):
    write_image_folder(tmp_path, "train", [4, 4, 4])
    write_image_folder(tmp_path, "val", [2, 2, 2])
    config = PretrainConfig(data="unused", arch="test_resnet", input_size=64, decoder_width=64, global_batch=4,
                            num_workers=0, knn_data=str(tmp_path), knn_train_images=6)
    ranks = [KnnMonitor(config, DistEnv(rank=rank, world_size=2), Precision()) for rank in (0, 1)]
    for monitor in ranks:  # every rank votes with the labels of all images (its features are gathered)
        assert monitor.train_labels.tolist() == [0, 0, 1, 1, 2, 2]  # 2 of the 4 images of each class
        assert monitor.val_labels.tolist() == [0, 0, 1, 1, 2, 2]  # knn_val_images null: all of them
    # Each rank reads its share, rank r the images r, r + 2, ... of the subset: images 0 and 2 of each class.
    assert identities(ranks[0].train_loader) == [(0, 0), (1, 0), (2, 0)]
    assert identities(ranks[1].train_loader) == [(0, 2), (1, 2), (2, 2)]
    assert identities(ranks[1].val_loader) == [(0, 1), (1, 1), (2, 1)]
