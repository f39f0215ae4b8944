"""compile: auto compiles long runs on devices with a compiler backend; explicit settings are kept."""
import pytest
import torch
from torch import nn

import spark.engine.precision as precision
from spark.config import ConfigError, parse_section
from spark.engine.precision import AUTO_MIN_STEPS, Compilation
from spark.pretrain import PretrainConfig

CPU = torch.device("cpu")


@pytest.fixture
def compiler(monkeypatch):
    """Pretend a C++ compiler is (True) or is not (False) on PATH."""
    def set_present(present: bool) -> None:
        monkeypatch.setattr(precision.shutil, "which", lambda name: f"/usr/bin/{name}" if present else None)
    return set_present


def avx512():
    return "AVX512"


def test_auto_compiles_runs_of_at_least_the_threshold_on_an_avx512_cpu_with_a_compiler(compiler):
    compiler(True)
    short = Compilation.resolve("auto", AUTO_MIN_STEPS - 1, CPU, capability=avx512)
    long = Compilation.resolve("auto", AUTO_MIN_STEPS, CPU, capability=avx512)
    assert not short.enabled and f"{AUTO_MIN_STEPS - 1} steps < {AUTO_MIN_STEPS}" in short.reason
    assert long.enabled and long.describe() == f"compiled (auto: {AUTO_MIN_STEPS} steps >= {AUTO_MIN_STEPS})"
    bf16 = Compilation.resolve("auto", 10 * AUTO_MIN_STEPS, CPU, "bf16", capability=avx512)
    assert not bf16.enabled and "NaN gradients" in bf16.reason
    compiler(False)
    missing = Compilation.resolve("auto", 10 * AUTO_MIN_STEPS, CPU, capability=avx512)
    assert not missing.enabled and "no C++ compiler" in missing.reason


@pytest.mark.parametrize("cc", [None, "/opt/gcc/bin/gcc"])
def test_auto_on_cuda_needs_triton_and_a_c_compiler_for_its_launcher(cc, monkeypatch):
    """Triton compiles its CUDA kernel launcher with a C compiler on first use; without one the compiled run
    would fail at its first step, so auto declines and says why. ``$CC`` counts when it names a program."""
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(precision.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(precision.shutil, "which", lambda name: name if name == cc else None)
    if cc:
        monkeypatch.setenv("CC", cc)
    else:
        monkeypatch.delenv("CC", raising=False)
    decision = Compilation.resolve("auto", AUTO_MIN_STEPS, cuda)
    if cc:
        assert decision.enabled, decision.reason
    else:
        assert decision.describe() == "eager (auto: no C compiler (CC, cc, gcc, clang) for triton's kernel launcher)"
    monkeypatch.setattr(precision.importlib.util, "find_spec", lambda name: None)
    assert Compilation.resolve("auto", AUTO_MIN_STEPS, cuda).reason == "auto: no triton for CUDA kernels"


@pytest.mark.parametrize("kernels", ["AVX2", "DEFAULT"])
def test_auto_never_compiles_where_torch_runs_other_cpu_kernels(compiler, kernels):
    compiler(True)
    decision = Compilation.resolve("auto", 100 * AUTO_MIN_STEPS, CPU, capability=lambda: kernels)
    assert not decision.enabled
    assert decision.reason == f"auto: torch runs its {kernels} CPU kernels, where compiling did not speed up a step"
    assert Compilation.resolve(True, 1, CPU, capability=lambda: kernels).enabled  # an explicit setting is kept


def test_explicit_settings_are_kept_whatever_the_run_length(compiler):
    compiler(False)
    assert Compilation.resolve(True, 1, CPU).enabled and not Compilation.resolve(True, 1, CPU).warning
    risky = Compilation.resolve(True, 1, CPU, "bf16")
    assert risky.enabled and "NaN gradients" in risky.warning
    assert not Compilation.resolve(False, 10 * AUTO_MIN_STEPS, CPU).enabled
    model = nn.Linear(2, 2)
    assert Compilation.resolve(False, 1, CPU).apply(model) is model
    assert Compilation.resolve(True, 1, CPU).apply(model)._orig_mod is model  # compiled lazily, on first call


def test_pretrain_compile_accepts_auto_and_booleans_only(tmp_path):
    base = {"data": str(tmp_path), "arch": "resnet18", "input_size": 64}
    assert parse_section({"pretrain": base}, "pretrain", PretrainConfig).compile == "auto"
    assert parse_section({"pretrain": {**base, "compile": True}}, "pretrain", PretrainConfig).compile is True
    with pytest.raises(ConfigError, match="pretrain.compile"):
        parse_section({"pretrain": {**base, "compile": "yes"}}, "pretrain", PretrainConfig)
