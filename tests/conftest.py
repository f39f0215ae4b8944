import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# What the checkout holds besides its files: git's and the environment's own folders, and Python's caches.
_NOT_CHECKOUT = {".git", ".venv", "__pycache__", ".pytest_cache"}


@pytest.fixture(autouse=True, scope="session")
def _private_inductor_cache(tmp_path_factory):
    """torch.compile's on-disk cache is machine-wide, and its key leaves out the kernels torch dispatches to: a
    cache written under another ATEN_CPU_CAPABILITY breaks compiled runs (torch 2.14.1). Each session compiles into
    its own, as on a fresh machine; subprocesses inherit it."""
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("inductor-cache"))
    yield
    if previous is None:
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def _checkout_entries() -> set[str]:
    entries = set()
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _NOT_CHECKOUT and not d.endswith(".egg-info")]
        entries.update(os.path.relpath(os.path.join(folder, name), REPO) for name in dirs + files)
    return entries


@pytest.fixture(autouse=True)
def _writes_only_under_tmp():
    """A test leaves the checkout as it found it: what it writes goes under its tmp dirs (a fresh clone's
    ``make test`` leaves ``git status`` clean, and no test reads what another left behind)."""
    before = _checkout_entries()
    yield
    written = sorted(_checkout_entries() - before)
    assert not written, f"the test wrote into the checkout: {', '.join(written[:5])}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def isolated_run(tmp_path, monkeypatch):
    """Training runs: in their own working directory (dvclive would otherwise initialise DVC in an enclosing git
    checkout), and without leaking deterministic mode into other tests."""
    monkeypatch.chdir(tmp_path)
    yield
    torch.use_deterministic_algorithms(False)
