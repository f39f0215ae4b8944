"""Fine-tuning data: the reference transforms, Mixup/CutMix targets, losses, and sharded top-k evaluation."""
import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import AutoAugment, RandAugment
from timm.data.random_erasing import RandomErasing
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.transforms import CenterCrop, InterpolationMode, Resize, TrivialAugmentWide

from eval.finetune.data import batch_mixer, eval_transform, label_split, train_transform
from eval.finetune.evaluate import topk_accuracy
from eval.finetune.loss import build_criterion
from spark.config import ConfigError
from spark.engine import DistEnv, Precision, eval_loader
from spark.images import image_folders


def kinds(transform) -> list[type]:
    return [type(t) for t in transform.transforms]


def photo(width: int = 90, height: int = 70) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("size, augment, policy", [
    (64, "auto", TrivialAugmentWide), (224, "trivial", TrivialAugmentWide), (384, "auto", AutoAugment),
    (64, "rand-m9-mstd0.5", RandAugment),
])
def test_train_transform_policy(size, augment, policy):
    transform = train_transform(size, augment, erase_prob=0.25)
    assert policy in kinds(transform)
    crop = transform.transforms[0]
    assert (crop.size, crop.scale, crop.interpolation) == ((size, size), (0.08, 1.0), InterpolationMode.BICUBIC)
    erasing = transform.transforms[-1]
    assert isinstance(erasing, RandomErasing) and (erasing.probability, erasing.mode) == (0.25, "pixel")
    assert transform(photo()).shape == (3, size, size)


def test_train_transform_without_policy_has_no_colour_jitter():
    assert [k.__name__ for k in kinds(train_transform(64, "none", erase_prob=0.0))] == [
        "RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "MaybeToTensor", "Normalize"]


def test_eval_transform_resizes_to_size_over_crop_then_centre_crops():
    transform = eval_transform(224, 0.95)
    resize, crop = transform.transforms[:2]
    assert isinstance(resize, Resize) and resize.size == 235 and resize.interpolation == InterpolationMode.BICUBIC
    assert isinstance(crop, CenterCrop) and crop.size == (224, 224)
    assert transform(photo()).shape == (3, 224, 224)


def test_mixing_off_still_smooths_the_targets():
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed, targets = batch_mixer(4, mixup=0.0, cutmix=1.0, switch_prob=0.5, smoothing=0.1)(images.clone(), labels)
    assert torch.equal(mixed, images)
    assert torch.allclose(targets, torch.full((4, 4), 0.025) + 0.9 * torch.eye(4))


def test_mixing_pairs_each_image_with_the_reversed_batch():
    np.random.seed(0)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixer = batch_mixer(4, mixup=0.8, cutmix=1.0, switch_prob=0.5, smoothing=0.0)
    for _ in range(6):  # Mixup and CutMix both show up
        mixed, targets = mixer(images.clone(), labels)
        lam = targets[0, 0].item()
        assert torch.allclose(targets.sum(1), torch.ones(4))
        assert targets[0, 3].item() == pytest.approx(1 - lam)  # image 0 mixed with image 3
        assert not torch.equal(mixed, images) or lam == 1.0


def test_loss_per_optimizer():
    assert isinstance(build_criterion("bce"), BinaryCrossEntropy)
    assert isinstance(build_criterion("ce"), SoftTargetCrossEntropy)
    logits, targets = torch.zeros(2, 4), torch.full((2, 4), 0.25)
    assert build_criterion("bce")(logits, targets).item() == pytest.approx(np.log(2))  # mean over classes too


class Lookup(nn.Module):
    """Logits stored per input id (the first pixel): a model whose predictions the test chooses."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0, 0, 0].long()]


def test_topk_accuracy_over_shards_counts_every_image_once():
    n, classes = 10, 6
    logits = torch.arange(classes, dtype=torch.float).repeat(n, 1)  # ranking: 5, 4, 3, 2, 1, 0
    labels = torch.tensor([5, 4, 3, 2, 1, 0, 5, 5, 0, 1])  # top-1 hits: 3, top-5 hits: 8
    dataset = TensorDataset(torch.arange(n, dtype=torch.float).view(n, 1, 1, 1).expand(n, 3, 2, 2), labels)
    seen = []
    for rank in range(3):
        loader = eval_loader(dataset, batch_size=2, env=DistEnv(rank=rank, world_size=3), num_workers=0)
        seen += [int(i) for x, _ in loader for i in x[:, 0, 0, 0]]
    assert sorted(seen) == list(range(n))
    loader = eval_loader(dataset, batch_size=4, env=DistEnv(), num_workers=0)
    model = Lookup(logits).train()
    assert topk_accuracy(model, loader, DistEnv(), Precision()) == {"top1": 30.0, "top5": 80.0}
    assert model.training  # mode restored
    assert topk_accuracy(Lookup(logits[:, :3]), loader, DistEnv(), Precision())["top5"] == 50.0  # k capped at 3


def test_image_folders_need_train_and_val_with_the_same_classes(tmp_path):
    for split, classes in (("train", "ab"), ("val", "abc")):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            photo(8, 8).save(tmp_path / split / name / "0.png")
    with pytest.raises(ConfigError, match=r"train has 2 classes and .*val 3; they must have the same class folders"):
        image_folders(tmp_path, train_transform(32, "auto", 0.25), eval_transform(32, 0.95), "finetune.data")
    with pytest.raises(ConfigError, match=r"^params: finetune.data: no train/ folder in"):
        image_folders(tmp_path / "train", None, None, "finetune.data")


def test_label_split_is_stratified_and_fixed_by_the_seed():
    targets = [0] * 50 + [1] * 30 + [2] * 3
    chosen = label_split(targets, 0.1, seed=7)
    counts = np.bincount([targets[i] for i in chosen], minlength=3)
    assert counts.tolist() == [5, 3, 1]  # round(10 %) per class, at least one image of every class
    assert chosen == sorted(set(chosen)) and chosen == label_split(targets, 0.1, seed=7)
    assert label_split(targets, 0.1, seed=8) != chosen  # another seed, another split
    assert label_split(targets, 1.0, seed=7) == list(range(len(targets)))


def test_crop_scale_bounds_the_random_resized_crop():
    crop = train_transform(64, "none", 0.0, (0.35, 1.0)).transforms[0]
    assert crop.scale == (0.35, 1.0) and train_transform(64, "none", 0.0).transforms[0].scale == (0.08, 1.0)
