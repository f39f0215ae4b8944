"""Seeded data order and augmentation: independent of worker count, rank-disjoint, reproducible per epoch."""
import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from spark.engine.data import derive_seed, seeded, set_epoch, train_loader
from spark.engine.distributed import DistEnv


class RandomAugmented(Dataset):
    """Item i is (i, draws from torch, random and NumPy): stands in for random transforms."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, torch.rand(()).item(), random.random(), np.random.rand()], dtype=torch.float64)


def epochs(loader, count: int = 2) -> list[torch.Tensor]:
    out = []
    for epoch in range(count):
        set_epoch(loader, epoch)
        out.append(torch.cat(list(loader)))
    return out


def test_batches_do_not_depend_on_the_worker_count():
    inline = epochs(train_loader(RandomAugmented(), batch_size=4, env=DistEnv(), seed=3, num_workers=0))
    workers = epochs(train_loader(RandomAugmented(), batch_size=4, env=DistEnv(), seed=3, num_workers=2))
    for a, b in zip(inline, workers):
        assert torch.equal(a, b)
    assert not torch.equal(inline[0], inline[1])  # a new shuffle and new draws each epoch


def test_ranks_get_disjoint_shards_of_full_batches():
    shards = [epochs(train_loader(RandomAugmented(), batch_size=5, env=DistEnv(rank=r, world_size=2), seed=0,
                                  num_workers=0), 1)[0] for r in range(2)]
    assert all(len(s) == 10 for s in shards)  # 12 per rank, incomplete batch dropped
    assert not set(shards[0][:, 0].tolist()) & set(shards[1][:, 0].tolist())


def repeated_epoch(world_size: int, repeats: int, seed: int = 0, epoch: int = 0) -> list[torch.Tensor]:
    """Each rank's items of one epoch under repeated augmentation, batches of 2."""
    shards = []
    for rank in range(world_size):
        loader = train_loader(RandomAugmented(), batch_size=2, env=DistEnv(rank=rank, world_size=world_size),
                              seed=seed, num_workers=0, repeats=repeats)
        set_epoch(loader, epoch)
        shards.append(torch.cat(list(loader)))
    return shards


def test_repeated_augmentation_sends_each_copy_to_another_rank_with_its_own_draws():
    shards = repeated_epoch(world_size=3, repeats=3)
    assert [len(s) for s in shards] == [8, 8, 8]  # an epoch is still the dataset's length: 24 // 3 per rank
    images = [s[:, 0].long().tolist() for s in shards]
    assert images[0] == images[1] == images[2]  # the copies of an image sit at one position on each rank
    assert len(set(images[0])) == 8  # 8 distinct images, each seen 3 times
    draws = torch.stack([s[:, 1:] for s in shards])  # (rank, item, draw)
    assert all(len({tuple(d.tolist()) for d in draws[:, i]}) == 3 for i in range(8))  # three augmentations
    plain = repeated_epoch(world_size=3, repeats=1)
    assert len(set(torch.cat(plain)[:, 0].long().tolist())) == 24  # without repeats, every image once


def test_repeated_augmentation_follows_the_seed_and_the_epoch():
    def order(**kw):
        return repeated_epoch(world_size=2, repeats=3, **kw)[0][:, 0].tolist()

    assert order(seed=0) == order(seed=0)
    assert order(seed=0) != order(seed=1)  # timm's sampler would shuffle every seed alike
    assert order(epoch=0) != order(epoch=1)
    single = repeated_epoch(world_size=1, repeats=3)[0][:, 0].long().tolist()
    assert len(single) == 24 and single[0::3] == single[1::3] == single[2::3]  # one rank: copies side by side


def test_seeded_block_restores_the_outer_generators():
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    expected = (torch.rand(()), random.random(), np.random.rand())
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    with seeded(123):
        inner = (torch.rand(()), random.random(), np.random.rand())
    assert (torch.rand(()), random.random(), np.random.rand()) == expected
    with seeded(123):
        assert (torch.rand(()), random.random(), np.random.rand()) == inner


def test_derived_seeds_are_distinct_and_stable():
    seeds = {derive_seed(0, epoch, rank) for epoch in range(50) for rank in range(8)}
    assert len(seeds) == 400
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert 0 <= derive_seed(-1, 2**70) < 2**63


@pytest.fixture(autouse=True)
def _restore_global_rngs():
    state = random.getstate(), np.random.get_state()
    yield
    random.setstate(state[0])
    np.random.set_state(state[1])
