"""Randomness as a pure function of (seed, epoch, rank, sample), so a resumed run replays an uninterrupted one.

Instead of checkpointing generator states (one per rank and per data-loader worker, which persistent workers make
impossible to restore), every epoch reseeds each rank from :func:`derive_seed`, and every sample's augmentation
runs under its own seed (:func:`seeded`). The draws then do not depend on the worker count or on where a run was
interrupted.
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


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
