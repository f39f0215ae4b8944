"""Numeric format of a run: bf16 autocast (CUDA and CPU through one code path) and channels_last memory.

``precision: auto`` takes bf16 only where the device computes it natively. On a CPU without AVX512-BF16 or AMX,
oneDNN emulates bf16 and a SparK step is 12-17x *slower* than in fp32, so there ``auto`` means fp32. The same holds
where torch runs its AVX2 kernels on an AVX512 CPU (``ATEN_CPU_CAPABILITY=avx2``, which emulates an AVX2-only CPU).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import Tensor, nn

PrecisionName = Literal["auto", "fp32", "bf16"]

# /proc/cpuinfo flags of CPUs with bf16 arithmetic in hardware: x86 AVX512-BF16 or AMX, Arm's BF16 extension.
X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
NATIVE_BF16_CPU_FLAGS = X86_BF16_FLAGS | {"bf16"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (x86 ``flags``, Arm ``Features``); empty where unreadable."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return frozenset()
    return frozenset(word for line in lines if line.split(":", 1)[0].strip() in ("flags", "Features")
                     for word in line.split(":", 1)[1].split())


def native_bf16(device: torch.device, flags: Callable[[], frozenset[str]] = cpu_flags,
                capability: Callable[[], str] = torch.backends.cpu.get_cpu_capability) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 in hardware, and the evidence (for the run's log and run.json).

    x86 bf16 instructions are AVX512 ones: they count only when torch dispatches its AVX512 kernels."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{name} supports bf16"
        return False, f"{name} has no native bf16"
    if device.type != "cpu":
        return False, f"no bf16 check for {device.type} devices"
    found, kernels = sorted(NATIVE_BF16_CPU_FLAGS & flags()), capability()
    if found and kernels != "AVX512" and set(found) <= X86_BF16_FLAGS:
        return False, f"CPU has {'/'.join(found)} but torch runs its {kernels} kernels"
    if found:
        return True, f"CPU ({kernels}) has {'/'.join(found)}"
    return False, f"CPU ({kernels}) has no native bf16 (no avx512_bf16/amx_bf16)"


@dataclass(frozen=True)
class Precision:
    """``bf16`` autocasts forward passes to bfloat16 (weights, grads and optimizer stay fp32, so no loss scaling);
    ``channels_last`` stores 4-D activations and weights NHWC, which oneDNN and cuDNN convolutions prefer.
    ``reason`` says why a run got its precision (see :meth:`resolve`)."""

    name: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    reason: str = field(default="", compare=False)
    emulated: bool = field(default=False, compare=False)  # bf16 asked for on hardware without it: slow

    @classmethod
    def resolve(cls, requested: PrecisionName, channels_last: bool, device: torch.device,
                flags: Callable[[], frozenset[str]] = cpu_flags,
                capability: Callable[[], str] = torch.backends.cpu.get_cpu_capability) -> Precision:
        """The precision a run uses on ``device``: ``auto`` -> bf16 where native, else fp32; explicit names are
        kept (an explicit bf16 without hardware support runs, marked ``emulated``)."""
        if requested == "fp32":
            return cls("fp32", channels_last, "fp32 as configured")
        native, evidence = native_bf16(device, flags, capability)
        if requested == "bf16":
            return cls("bf16", channels_last, f"bf16 as configured; {evidence}", emulated=not native)
        return cls("bf16" if native else "fp32", channels_last, f"auto: {evidence}")

    def describe(self) -> str:
        """One line for logs and tables, e.g. ``fp32 + channels_last (auto: CPU (AVX2) has no native bf16 ...)``."""
        layout = " + channels_last" if self.channels_last else ""
        return f"{self.name}{layout} ({self.reason})" if self.reason else f"{self.name}{layout}"

    def log(self, logger) -> None:
        """Log what the run resolved to; one warning line when bf16 will be emulated."""
        if self.emulated:
            logger.warning("precision bf16 without native support (%s): expect a step 10x+ slower than fp32; "
                           "set precision: auto or fp32", self.reason)
        else:
            logger.info("precision %s", self.describe())

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.name == "bf16")

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=self.memory_format)

    def prepare_input(self, images: Tensor, device: torch.device) -> Tensor:
        """Move a batch to ``device`` (asynchronously from pinned memory) in the run's memory format."""
        return images.to(device, non_blocking=True, memory_format=self.memory_format)
