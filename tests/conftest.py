import os

import pytest
import torch


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
