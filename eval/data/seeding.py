"""Per-item random streams: each image draws from its own generator keyed by (seed, dataset, split, index).

Keying by name instead of consuming one global stream makes the output independent of worker count and order.
"""
from __future__ import annotations

import zlib

import numpy as np


def item_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator for one item; string keys are hashed with CRC-32 (stable, unlike ``hash``)."""
    words = [seed, *(key if isinstance(key, int) else zlib.crc32(key.encode()) for key in keys)]
    return np.random.default_rng(np.random.SeedSequence(words))
