"""What every run records beside its metrics: enough to tie a table cell back to the run that made it.

torch is imported only by the functions that need it: data preparation and the tables do not pay for it.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .io import write_json

ENGINE_VARIABLE = "SPARK_ENGINE"  # set by the Snakefile for its jobs; DVC sets DVC_STAGE for its own


def params_hash(section: Any) -> str:
    """A short stable hash of a (resolved) config section."""
    return hashlib.sha256(json.dumps(section, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_commit() -> str:
    """The commit of the code that runs: its git checkout's (``+dirty`` if tracked files differ), else the commit
    pip recorded when installing the package from a VCS URL, else ``unknown (why)``."""
    source = Path(__file__).resolve().parents[1]  # the folder holding this `spark` package
    try:  # only if the package is tracked there (a venv inside a checkout is not the checkout's code)
        _git(source, "ls-files", "--error-unmatch", "spark/provenance.py")
        commit = _git(source, "rev-parse", "HEAD")
        dirty = _git(source, "status", "--porcelain", "--untracked-files=no")
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        dist = importlib.metadata.distribution("spark-repro")
        url = json.loads(dist.read_text("direct_url.json") or "{}")
        if Path(dist.locate_file("spark/provenance.py")).resolve() == Path(__file__).resolve():
            if "commit_id" in url.get("vcs_info", {}):
                return f"{url['vcs_info']['commit_id']} (installed from {url['url']})"
    except importlib.metadata.PackageNotFoundError:
        pass
    return f"unknown ({source} is not a git checkout of the code, nor was it installed from a VCS URL)"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


def software() -> dict[str, str | None]:
    """Versions of Python and of every package that shapes the numbers; ``None`` for one not installed."""
    import torch

    versions: dict[str, str | None] = {"python": platform.python_version()}
    providers = importlib.metadata.packages_distributions()
    for package in ("torch", "torchvision", "timm", "numpy", "detectron2"):
        names = providers.get(package, [])  # detectron2 comes as `detectron2` or a re-upload such as `pb1-detectron2`
        versions[package] = importlib.metadata.version(names[0]) if names else None
    versions["torch"] = torch.__version__  # with its build suffix (+cu130, +cpu)
    versions["cuda"] = torch.version.cuda
    versions["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return versions


def engine() -> str:
    """What started this job: ``dvc`` (``dvc repro`` sets DVC_STAGE), ``snakemake`` (the Snakefile sets
    SPARK_ENGINE), else ``by hand``."""
    return "dvc" if "DVC_STAGE" in os.environ else os.environ.get(ENGINE_VARIABLE, "by hand")


def hardware() -> str:
    """CPU model, thread count and CPU capability, or the GPUs used."""
    import torch

    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return f"{torch.cuda.device_count()}x {'/'.join(sorted(names))}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"{torch.backends.cpu.get_cpu_capability()})")


@contextmanager
def recorded_run(out_dir: str | Path, stage: str, section: Any, seed: int) -> Iterator[dict[str, Any]]:
    """Write ``run.json`` (commit, params hash, seed, engine, host, wall time, hardware, software versions) once the
    block succeeds.

    The yielded dict may be extended by the stage (e.g. the init source). Wall time counts this invocation
    only: a resumed run reports the time of its last leg plus ``resumed: true`` if the stage says so.
    """
    import torch

    info: dict[str, Any] = {
        "stage": stage,
        "git_commit": git_commit(),
        "params_hash": params_hash(section),
        "seed": seed,
        "engine": engine(),
        "host": platform.node(),
        "hardware": hardware(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "software": software(),
    }
    start = time.time()
    yield info
    info["wall_time_s"] = round(time.time() - start, 1)
    write_json(Path(out_dir) / "run.json", info)
