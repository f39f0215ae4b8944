"""What every run records beside its metrics: enough to tie a table cell back to the run that made it."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from .io import write_json


def params_hash(section: Any) -> str:
    """A short stable hash of a (resolved) config section."""
    return hashlib.sha256(json.dumps(section, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_commit() -> str:
    """The checkout's commit, with ``+dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty.strip() else "")


def hardware() -> str:
    """CPU model and thread count, or the GPUs used."""
    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return f"{torch.cuda.device_count()}x {'/'.join(sorted(names))}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"{torch.backends.cpu.get_cpu_capability()})")


@contextmanager
def recorded_run(out_dir: str | Path, stage: str, section: Any, seed: int) -> Iterator[dict[str, Any]]:
    """Write ``run.json`` (commit, params hash, seed, wall time, hardware) once the block succeeds.

    The yielded dict may be extended by the stage (e.g. the init source). Wall time counts this invocation
    only: a resumed run reports the time of its last leg plus ``resumed: true`` if the stage says so.
    """
    info: dict[str, Any] = {
        "stage": stage,
        "git_commit": git_commit(),
        "params_hash": params_hash(section),
        "seed": seed,
        "hardware": hardware(),
        "torch": torch.__version__,
    }
    start = time.time()
    yield info
    info["wall_time_s"] = round(time.time() - start, 1)
    write_json(Path(out_dir) / "run.json", info)
