import pytest
import torch


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
