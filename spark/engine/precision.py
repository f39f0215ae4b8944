"""How a run computes on its device: bf16 autocast or fp32, channels_last memory, and ``torch.compile``.

The ``auto`` settings take what pays on the device at hand: bf16 only where the hardware computes it natively
(oneDNN's emulated bf16 is far slower than fp32), and compiling only for runs long enough to repay the compile, on
devices where it speeds a step up. The measurements behind both rules are in docs/benchmarks.md.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
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


CompileSetting = Literal["auto"] | bool

# ``compile: auto`` compiles runs of at least this many optimizer steps: enough to repay the compile at each input
# size measured.
AUTO_MIN_STEPS = 3000


@dataclass(frozen=True)
class Compilation:
    """``enabled``: the model is wrapped in ``torch.compile``; ``reason`` says why (logs and run.json).

    ``auto`` compiles runs of at least :data:`AUTO_MIN_STEPS` steps on a device with a compiler backend (Triton on
    CUDA, a C++ compiler on CPU), and on a CPU only where torch runs its AVX512 kernels, in fp32: with AVX2 kernels
    the convolutions, which compiling leaves as they are, dominate a step, so the compile never pays; in bf16,
    inductor's vectorised CPU kernels gave NaN gradients, which would stop the run."""

    enabled: bool = False
    reason: str = ""
    warning: str = ""  # a risk the configuration takes, logged at the start of the run

    @classmethod
    def resolve(cls, requested: CompileSetting, steps: int, device: torch.device, precision: str = "fp32",
                capability: Callable[[], str] = torch.backends.cpu.get_cpu_capability) -> Compilation:
        """The decision for a run of ``steps`` optimizer steps on ``device`` in ``precision`` (fp32 or bf16);
        ``capability`` says which CPU kernels torch runs (injectable for tests)."""
        if requested == "auto":
            backend = _backend_missing(device)
            if backend:
                return cls(False, f"auto: {backend}")
            if device.type == "cpu" and precision == "bf16":
                return cls(False, "auto: inductor's CPU bf16 kernels gave NaN gradients (torch 2.14)")
            if device.type == "cpu" and (kernels := capability()) != "AVX512":
                return cls(False, f"auto: torch runs its {kernels} CPU kernels, where compiling did not speed up "
                                  "a step")
            if steps < AUTO_MIN_STEPS:
                return cls(False, f"auto: {steps} steps < {AUTO_MIN_STEPS}, compiling would not pay")
            return cls(True, f"auto: {steps} steps >= {AUTO_MIN_STEPS}")
        if requested and device.type == "cpu" and precision == "bf16":
            return cls(True, "compiled as configured", "compiled bf16 on a CPU: inductor's kernels gave NaN gradients "
                       "in torch 2.14; the run stops at the first non-finite gradient (set compile: auto)")
        return cls(requested, f"{'compiled' if requested else 'eager'} as configured")

    def apply(self, model: nn.Module) -> nn.Module:
        return torch.compile(model) if self.enabled else model

    def describe(self) -> str:
        return f"{'compiled' if self.enabled else 'eager'} ({self.reason})"

    def log(self, logger) -> None:
        if self.warning:
            logger.warning(self.warning)
        logger.info("model %s", self.describe())


def _backend_missing(device: torch.device) -> str:
    """Why inductor could not compile for ``device`` ('' if it can): CUDA kernels need Triton, which builds its
    kernel launcher with a C compiler (``$CC``, else cc, gcc or clang) on first use; CPU kernels need a C++
    compiler."""
    if device.type == "cuda":
        if not importlib.util.find_spec("triton"):
            return "no triton for CUDA kernels"
        if not _first_program(os.environ.get("CC"), "cc", "gcc", "clang"):
            return "no C compiler (CC, cc, gcc, clang) for triton's kernel launcher"
        return ""
    if device.type == "cpu":
        return "" if _first_program("g++", "clang++", "c++") else "no C++ compiler for CPU kernels"
    return f"no compile policy for {device.type} devices"


def _first_program(*names: str | None) -> str | None:
    """The path of the first of ``names`` found on PATH."""
    return next((path for name in names if name and (path := shutil.which(name))), None)
