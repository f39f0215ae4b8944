"""Randomness and data order as pure functions of (seed, epoch, rank, sample), so a resumed run replays an
uninterrupted one.

Instead of checkpointing generator states (one per rank and per loader worker, which persistent workers make
impossible to restore), each epoch reseeds every rank from :func:`derive_seed`, and the loader runs each sample's
transforms (torch, ``random`` or NumPy draws) under its own seed, whatever the worker count.
An evaluation reads a fixed, unshuffled shard per rank instead (:func:`eval_loader`).
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler, Subset

from .distributed import DistEnv


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (``derive_seed(seed, epoch, rank)``)."""
    return int(np.random.SeedSequence([k & 0xFFFF_FFFF_FFFF_FFFF for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def seed_all(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python's ``random`` and NumPy's global generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the CPU generators (torch, ``random``, NumPy) seeded, restoring their states after."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def set_deterministic(enabled: bool) -> None:
    """Bitwise-reproducible kernels (errors for ops that have none), or cuDNN autotuning for speed."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = not enabled


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)``: this rank's share of a shuffled epoch, with a seed per sample.

    With ``repeats`` > 1 (repeated augmentation, DeiT's sampler as timm ships it) the shuffled epoch lists each
    image ``repeats`` times in a row, the ranks take every ``world_size``-th entry, so the copies of an image
    land on different ranks, and each copy draws its own augmentation. An epoch stays one dataset's length:
    each rank keeps ``len(dataset) // world_size`` entries, like the plain order. Not timm's sampler itself: it
    shuffles by the epoch alone (every seed would see one order) and cannot seed each copy.
    """

    def __init__(self, num_samples: int, env: DistEnv, seed: int, shuffle: bool = True, repeats: int = 1) -> None:
        self.seed = seed
        self.epoch = 0
        self.repeats = repeats
        self.order = DistributedSampler(range(num_samples), num_replicas=env.world_size, rank=env.rank,
                                        shuffle=shuffle, seed=seed, drop_last=True)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.repeats <= 1:
            for index in self.order:
                yield index, derive_seed(self.seed, self.epoch, index)
            return
        order = self.order  # the plain order's permutation (seed + epoch), rank and length, with copies
        n = len(order.dataset)
        images = torch.randperm(n, generator=torch.Generator().manual_seed(order.seed + self.epoch)) \
            if order.shuffle else torch.arange(n)
        copies = torch.repeat_interleave(images, self.repeats).tolist()
        for position in range(order.rank, len(copies), order.num_replicas)[:len(order)]:
            yield copies[position], derive_seed(self.seed, self.epoch, copies[position], position % self.repeats)

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
                 collate_fn: Callable[[list], Any] | None = None, repeats: int = 1) -> DataLoader:
    """Shuffled, per-rank ``batch_size`` batches (incomplete ones dropped) from worker processes that persist
    across epochs; ``repeats`` > 1 is repeated augmentation (:class:`SeededSampler`). Call :func:`set_epoch`
    before each epoch."""
    sampler = SeededSampler(len(dataset), env, seed, repeats=repeats)
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


def eval_loader(dataset: Dataset, *, batch_size: int, env: DistEnv, num_workers: int) -> DataLoader:
    """This rank's share of ``dataset``, in order: images ``rank, rank + world_size, ...``. Unlike
    DistributedSampler it pads nothing, so summed counts cover the set exactly once."""
    shard = Subset(dataset, range(env.rank, len(dataset), env.world_size))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=env.device.type == "cuda", persistent_workers=num_workers > 0)
