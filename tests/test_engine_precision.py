"""``precision: auto`` follows the hardware: bf16 only where the device computes it natively."""
from __future__ import annotations

import logging

import pytest
import torch

from spark.engine.precision import Precision, cpu_flags, native_bf16

CPU = torch.device("cpu")
AVX2 = lambda: frozenset({"fpu", "sse2", "avx", "avx2", "fma"})  # noqa: E731 - an AMD EPYC without AVX512
SAPPHIRE = lambda: frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})  # noqa: E731
AVX512_KERNELS = lambda: "AVX512"  # noqa: E731 - torch.backends.cpu.get_cpu_capability() of such a CPU


def test_auto_is_fp32_on_a_cpu_without_native_bf16():
    precision = Precision.resolve("auto", True, CPU, flags=AVX2)
    assert (precision.name, precision.channels_last, precision.emulated) == ("fp32", True, False)
    assert "no native bf16" in precision.reason


def test_auto_is_bf16_on_a_cpu_with_avx512_bf16_or_amx():
    precision = Precision.resolve("auto", False, CPU, flags=SAPPHIRE, capability=AVX512_KERNELS)
    assert (precision.name, precision.emulated) == ("bf16", False)
    assert "amx_bf16/avx512_bf16" in precision.reason
    only_bf16 = lambda: frozenset({"avx512_bf16"})  # noqa: E731
    assert Precision.resolve("auto", False, CPU, flags=only_bf16, capability=AVX512_KERNELS).name == "bf16"


def test_auto_is_fp32_where_torch_runs_avx2_kernels_on_a_bf16_cpu():
    """ATEN_CPU_CAPABILITY=avx2 on a Sapphire Rapids: torch's kernels cannot use the bf16 instructions."""
    precision = Precision.resolve("auto", True, CPU, flags=SAPPHIRE, capability=lambda: "AVX2")
    assert precision.name == "fp32"
    assert precision.reason == "auto: CPU has amx_bf16/avx512_bf16 but torch runs its AVX2 kernels"
    slow = Precision.resolve("bf16", True, CPU, flags=SAPPHIRE, capability=lambda: "AVX2")
    assert (slow.name, slow.emulated) == ("bf16", True)


def test_arm_bf16_does_not_depend_on_x86_kernels():
    native, evidence = native_bf16(CPU, lambda: frozenset({"asimd", "bf16"}), lambda: "DEFAULT")
    assert native and evidence == "CPU (DEFAULT) has bf16"


def test_explicit_names_are_kept_and_emulated_bf16_warns_once(caplog):
    assert Precision.resolve("fp32", False, CPU, flags=SAPPHIRE).name == "fp32"
    slow = Precision.resolve("bf16", False, CPU, flags=AVX2)
    assert (slow.name, slow.emulated) == ("bf16", True)
    logger = logging.getLogger("test.precision")
    with caplog.at_level(logging.INFO, logger="test.precision"):
        slow.log(logger)
        Precision.resolve("bf16", False, CPU, flags=SAPPHIRE, capability=AVX512_KERNELS).log(logger)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "slower than fp32" in warnings[0].getMessage()


def test_resolved_precisions_compare_by_format_only():
    assert Precision.resolve("auto", True, CPU, flags=AVX2) == Precision("fp32", True)
    assert Precision.resolve("fp32", False, CPU).describe() == "fp32 (fp32 as configured)"


@pytest.mark.parametrize("text, expected", [
    ("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2 avx512_bf16\n",
     {"fpu", "avx2", "avx512_bf16"}),
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16\n", {"fp", "asimd", "sve", "bf16"}),
    ("processor\t: 0\nmodel name\t: some cpu\n", set()),
])
def test_cpu_flags_reads_x86_and_arm_cpuinfo(tmp_path, text, expected):
    (tmp_path / "cpuinfo").write_text(text)
    assert cpu_flags(tmp_path / "cpuinfo") == expected
    native, _ = native_bf16(CPU, lambda: cpu_flags(tmp_path / "cpuinfo"), AVX512_KERNELS)
    assert native == bool(expected & {"avx512_bf16", "bf16"})


def test_cpu_flags_of_a_missing_file_are_empty(tmp_path):
    assert cpu_flags(tmp_path / "absent") == frozenset()
