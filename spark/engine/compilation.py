"""Whether a run compiles its model with ``torch.compile``, and why (``compile: auto``).

Compiling fuses the elementwise work between convolutions (masks, norm apply, activations) into few kernels, but
its first step spends a minute or more compiling, and a mini run lasts minutes. ``auto`` therefore compiles only
runs of at least :data:`AUTO_MIN_STEPS` optimizer steps, on a device with a compiler backend (Triton on CUDA, a
C++ compiler on CPU), and on a CPU only where torch runs its AVX512 kernels, in fp32:

- with AVX2 kernels the convolutions, which compiling leaves as they are, are over 80 % of a SparK step: compiled
  and eager steps took the same time (0.994x), so there the compile never pays;
- in bf16 inductor's vectorised CPU kernels gave NaN gradients for a plain timm ResNet-18 (torch 2.14.1, AVX512;
  correct with vectorisation off), which would stop the run.

The figures behind these rules are in docs/benchmarks.md.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn

CompileSetting = Literal["auto"] | bool

# Break-even measured on a 2-core CPU with AVX512 kernels (SparK resnet18, batch 32, fp32, composite masked BN):
# the ~100 s compile is repaid after ~230 steps at 128 px (0.47 s saved per step) but only
# after ~2100 at 64 px (0.05 s). 3000 pays in both.
AUTO_MIN_STEPS = 3000


@dataclass(frozen=True)
class Compilation:
    """``enabled``: the model is wrapped in ``torch.compile``; ``reason`` says why (logs and run.json)."""

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
