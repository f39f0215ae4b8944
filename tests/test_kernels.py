"""The native masked-BN kernels: built once per source/flags/torch/CPU capability, moved into the cache whole, and
optional (a failed build falls back to the composite ops)."""
import logging
import re
from pathlib import Path

import torch

from spark import kernels
from spark.model import SparKConfig, build_spark


def test_a_build_lands_whole_under_a_hashed_name_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    library = Path(kernels._built_library())
    capability = torch.backends.cpu.get_cpu_capability().lower()
    assert re.fullmatch(rf"masked_bn_{capability}_[0-9a-f]{{16}}\.so", library.name)
    assert list((tmp_path / "spark").iterdir()) == [library]  # no build directory left behind
    built = library.stat().st_mtime_ns
    assert Path(kernels._built_library()) == library and library.stat().st_mtime_ns == built  # not rebuilt


def test_without_the_kernels_sparse_models_use_the_composite_ops(monkeypatch, caplog):
    def no_compiler():
        raise RuntimeError("build failed: c++: command not found")

    monkeypatch.setattr(kernels, "_built_library", no_compiler)
    kernels.masked_bn_ops.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="spark.kernels"):
            assert kernels.masked_bn_ops() is None
        assert "c++: command not found); using the composite PyTorch version" in caplog.text
        model = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64))
        loss = model(torch.randn(2, 3, 64, 64))
        loss.backward()
        assert torch.isfinite(loss) and model.encoder.bn1.weight.grad is not None
    finally:
        kernels.masked_bn_ops.cache_clear()
