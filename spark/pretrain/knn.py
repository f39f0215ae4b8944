"""The k-NN monitor of a pretraining run: how well the encoder's features separate labelled classes, per epoch.

The reconstruction loss says how well the model fills in masked patches, not whether its encoder learns features
a classifier can use; self-supervised libraries report an online k-NN accuracy for that. Here: the encoder on the
unmasked image (the sparse encoder with every cell visible), in eval mode, its coarsest map averaged over space and
L2-normalised; each validation image takes the weighted vote of its ``k`` most cosine-similar training images, each
voting for its class with weight ``exp(cosine / T)`` (Wu et al. 2018, as DINO evaluates). No parameter is trained,
so the number follows the encoder alone, from its random initialisation on.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder

from spark.engine import DistEnv, Precision, eval_loader
from spark.engine.distributed import gather_shards
from spark.images import image_folders, spread
from spark.model import SparK

from .config import PretrainConfig
from .data import eval_transform

VAL_CHUNK = 1024  # validation images per similarity matrix: bounds memory at ImageNet scale


def knn_top1(train_features: Tensor, train_labels: Tensor, val_features: Tensor, val_labels: Tensor, k: int,
             temperature: float) -> float:
    """Top-1 (%) of the weighted k-NN vote over L2-normalised features (rows), in float32.

    ``k`` is capped at the training set's size; a vote tied between classes goes to the lower class index. The
    weights are ``exp((cosine - best cosine) / T)``: the same vote as ``exp(cosine / T)`` scaled per image, without
    overflow at small temperatures."""
    train_features = train_features.float()
    num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    k = min(k, len(train_features))
    correct = 0
    for features, labels in zip(val_features.float().split(VAL_CHUNK), val_labels.split(VAL_CHUNK)):
        similarity, neighbours = (features @ train_features.T).topk(k, dim=1)
        weights = ((similarity - similarity[:, :1]) / temperature).exp()
        votes = weights.new_zeros(len(features), num_classes).scatter_add_(1, train_labels[neighbours], weights)
        correct += (votes.argmax(dim=1) == labels).sum().item()
    return 100.0 * correct / len(val_labels)


@torch.no_grad()
def encoder_features(model: SparK, loader: DataLoader, env: DistEnv, precision: Precision) -> Tensor:
    """The pooled, L2-normalised float32 features of ``loader``'s images, in its order; the model's train/eval mode
    is restored."""
    was_training = model.training
    model.eval()
    shard = torch.empty(len(loader.dataset), model.scales.channels[-1], device=env.device)
    done = 0
    for images, _ in loader:
        images = precision.prepare_input(images, env.device)
        every_cell = torch.ones(len(images), 1, *model.grid, dtype=torch.bool, device=env.device)
        with precision.autocast(env.device):
            coarsest = model.forward_encoder(images, every_cell)[0]
        shard[done:done + len(images)] = F.normalize(coarsest.float().mean(dim=(-2, -1)), dim=1)
        done += len(images)
    model.train(was_training)
    return shard


class KnnMonitor:
    """The monitor's labelled images (fixed subsets of ``knn_data``'s train/ and val/, each spread over its
    class-sorted images: the same images in every run and every epoch), sharded over the ranks."""

    def __init__(self, config: PretrainConfig, env: DistEnv, precision: Precision) -> None:
        self.config, self.env, self.precision = config, env, precision
        transform = eval_transform(config.input_size)
        train_set, val_set = image_folders(config.knn_data, transform, transform, "pretrain.knn_data")
        self.train_loader, self.train_labels = self._split(train_set, config.knn_train_images)
        self.val_loader, self.val_labels = self._split(val_set, config.knn_val_images)

    def _split(self, dataset: ImageFolder, count: int | None) -> tuple[DataLoader, Tensor]:
        """This rank's loader of ``count`` images of ``dataset`` (None: all) and the labels of all of them."""
        indices = spread(range(len(dataset)), count or len(dataset))
        labels = torch.tensor([dataset.targets[i] for i in indices], device=self.env.device)
        loader = eval_loader(Subset(dataset, indices), batch_size=self.config.global_batch // self.env.world_size,
                             env=self.env, num_workers=self.config.num_workers)
        return loader, labels

    def top1(self, model: SparK) -> float:
        """The k-NN top-1 (%) of ``model``'s encoder: each rank extracts its shard's features, every rank votes with
        all of them, so all get the same number (every rank must call it)."""
        env, precision = self.env, self.precision
        train = gather_shards(encoder_features(model, self.train_loader, env, precision), len(self.train_labels))
        val = gather_shards(encoder_features(model, self.val_loader, env, precision), len(self.val_labels))
        return knn_top1(train, self.train_labels, val, self.val_labels, self.config.knn_k, self.config.knn_temperature)

    def describe(self) -> str:
        return (f"k-NN monitor: {self.config.knn_k} neighbours, T {self.config.knn_temperature}, "
                f"{len(self.train_labels)} train and {len(self.val_labels)} val images of {self.config.knn_data}")
