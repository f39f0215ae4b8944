"""Atomic file writes (a reader, or a killed run, never sees a half-written checkpoint or result) and safe loads.

torch is imported only by the functions that need it, so data preparation does not pay for it.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import InputError


class UnreadableFileError(InputError):
    """A checkpoint that is missing, truncated, not a torch file, or holds more than tensors and containers."""


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success it replaces ``path`` in one rename, on error it is removed. The
    file keeps the permissions of the one it replaces (a new one is readable by all, as an ordinary write makes it,
    not private like a temp file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` that replaces ``path`` atomically."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load_torch(path: str | Path) -> Any:
    """Load tensors and plain containers only (``weights_only=True``; a ``.safetensors`` file, as the Hugging Face
    hub publishes timm's weights, holds nothing else), on the CPU; any failure is one line."""
    import torch

    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for missing, corrupt or unsafe files
        text = str(err)  # the weights-only unpickler's cause follows its "error:" line; other errors are one line
        lines = [line.strip() for line in text.split("error:", 1)[-1].splitlines() if line.strip()]
        reason = lines[0] if lines else f"{type(err).__name__}: empty or truncated file"
        raise UnreadableFileError(f"{path}: cannot be read as a weights-only torch checkpoint ({reason})") from None


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, pretty-printed, keys in insertion order."""
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def check_output_dir(out: Path) -> None:
    """``out`` is a directory to create or to resume: a file standing where it or a parent of it would go stops
    the command before any work."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise InputError(f"--out {out}: {path} exists and is not a directory")
            return
