"""Native CPU kernels (``spark/csrc``), compiled on first use with torch's C++ extension builder and cached.

They are an optimisation only: where no C++ compiler or ninja is found, or the build fails, :func:`masked_bn_ops`
returns None and the composite PyTorch code runs instead (a warning says why, once per process).

The binary is built for the instruction set torch itself dispatches to (``torch.backends.cpu.get_cpu_capability``)
and cached under a name that hashes the source, flags and torch version, so a cache shared by different CPUs or
torch builds never serves a wrong binary. Each build goes to its own directory and is moved into place whole, so
concurrent first uses and a build killed half-way leave no lock or partial file behind.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "masked_bn.cpp"
# No FMA contraction: the backward pass recomputes the forward's ReLU decisions, which must come out alike. No FP
# traps: without it GCC keeps loops with a comparison (the ReLU's) scalar.
_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]
_ISA_FLAGS = {
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
}


def cache_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / "spark"


@functools.cache
def masked_bn_ops():
    """``torch.ops.spark_masked_bn`` (stats, apply, grad_sums, grad_input on CPU tensors), or None."""
    try:
        torch.ops.load_library(_built_library())
    except Exception as err:  # noqa: BLE001 - any failure means the composite path, which is exact too
        logger.warning("native masked-BN kernels unavailable (%s: %s); using the composite PyTorch version",
                       type(err).__name__, err)
        return None
    return torch.ops.spark_masked_bn


def _built_library() -> str:
    capability = torch.backends.cpu.get_cpu_capability()
    flags = _FLAGS + _ISA_FLAGS.get(capability, [])
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *flags, torch.__version__]).encode()).hexdigest()[:16]
    library = cache_dir() / f"masked_bn_{capability.lower()}_{key}.so"
    if library.exists():
        return str(library)
    _find_ninja()
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent, prefix="build-") as build:
        # In a child process: torch's builder also loads what it built, and a library loaded here from the build
        # directory could not be loaded again from the cache (its operators would register twice).
        script = ("import sys; from torch.utils.cpp_extension import load; "
                  "load('masked_bn', [sys.argv[1]], extra_cflags=sys.argv[3:], extra_ldflags=['-fopenmp'], "
                  "build_directory=sys.argv[2], is_python_module=False)")
        done = subprocess.run([sys.executable, "-c", script, str(SOURCE), build, *flags],
                              capture_output=True, text=True)
        if done.returncode:
            lines = (done.stderr + done.stdout).splitlines() or ["no output"]
            raise RuntimeError(f"build failed: {next((l for l in lines if 'error' in l), lines[-1]).strip()}")
        os.replace(Path(build) / "masked_bn.so", library)
    return str(library)


def _find_ninja() -> None:
    """torch's builder runs ``ninja`` from PATH; the ninja wheel installs it beside this Python's scripts."""
    scripts = sysconfig.get_path("scripts")
    if shutil.which("ninja") is None and shutil.which("ninja", path=scripts):
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
