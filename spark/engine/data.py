"""Training data loaders whose sample order and augmentation are fixed by (seed, epoch, index).

The sampler shards a shuffled epoch across ranks (DistributedSampler) and pairs each index with a seed; the
dataset wrapper runs the wrapped dataset's random transforms under that seed. Any map-style dataset whose
transforms draw from torch, ``random`` or NumPy (torchvision, timm) works unchanged.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from .distributed import DistEnv
from .rng import derive_seed, seeded


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)``: this rank's share of a shuffled epoch, with a seed per sample."""

    def __init__(self, num_samples: int, env: DistEnv, seed: int, shuffle: bool = True) -> None:
        self.seed = seed
        self.epoch = 0
        self.order = DistributedSampler(range(num_samples), num_replicas=env.world_size, rank=env.rank,
                                        shuffle=shuffle, seed=seed, drop_last=True)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order:
            yield index, derive_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self.order)


class SeededDataset(Dataset):
    """``dataset[index]`` computed under ``sample_seed`` for keys ``(index, sample_seed)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, sample_seed = key
        with seeded(sample_seed):
            return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)


def train_loader(dataset: Dataset, *, batch_size: int, env: DistEnv, seed: int, num_workers: int,
                 collate_fn: Callable[[list], Any] | None = None) -> DataLoader:
    """Shuffled, per-rank ``batch_size`` batches (incomplete ones dropped) from worker processes that persist
    across epochs. Call :func:`set_epoch` before each epoch."""
    sampler = SeededSampler(len(dataset), env, seed)
    # Its own generator: creating an iterator must not draw from the global RNG, which would shift every later
    # draw depending on whether workers persist.
    return DataLoader(
        SeededDataset(dataset),
        batch_sampler=BatchSampler(sampler, batch_size, drop_last=True),
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=env.device.type == "cuda",
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Select the shuffle and augmentation seeds of ``epoch`` for a :func:`train_loader`."""
    loader.batch_sampler.sampler.set_epoch(epoch)
