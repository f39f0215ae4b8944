"""What both generators share: rendering in worker processes and swapping a finished dataset into place."""
from __future__ import annotations

import functools
import multiprocessing
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
from PIL import Image

GENERATOR_VERSION = 2  # bump whenever a change to the generators changes the bytes they write

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[S, T], R], shared: S, tasks: Sequence[T], workers: int) -> list[R]:
    """``[fn(shared, t) for t in tasks]`` on ``workers`` processes, ``shared`` sent once per worker.

    Tasks are dealt round-robin into one shard per worker; results come back in task order, so the output does not
    depend on ``workers`` as long as each task carries its own random stream.
    """
    workers = min(workers, len(tasks))
    if workers <= 1:
        return [fn(shared, task) for task in tasks]
    shards = [tasks[i::workers] for i in range(workers)]
    with multiprocessing.get_context().Pool(workers) as pool:
        shard_results = pool.map(functools.partial(_run_shard, fn, shared), shards, chunksize=1)
    results: list = [None] * len(tasks)
    for i, part in enumerate(shard_results):
        results[i::workers] = part
    return results


def _run_shard(fn: Callable[[S, T], R], shared: S, shard: Sequence[T]) -> list[R]:
    return [fn(shared, task) for task in shard]


@contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Build into ``.<name>.partial`` beside ``final`` and swap it in on success, so a killed build never leaves a
    half-written dataset (or stale files from a larger earlier build) behind."""
    final = Path(final)
    partial, old = final.with_name(f".{final.name}.partial"), final.with_name(f".{final.name}.old")
    for leftover in (partial, old):
        shutil.rmtree(leftover, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def save_png(image: np.ndarray, path: Path) -> None:
    """PNG without metadata: identical pixels give identical bytes for a given Pillow/zlib. Level 1 compresses 3x
    faster than the default for files only ~6% larger."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG", compress_level=1)
