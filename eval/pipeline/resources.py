"""``resources.<stage>``: what one job of a stage asks the scheduler for, and gets.

Snakemake reads it for its ``threads`` and ``resources`` (memory, runtime, GPUs: the SLURM executor's request);
a training job itself (``spark pretrain|finetune|detect``, :mod:`eval.cli`) runs with ``threads / max(gpus, 1)``
torch threads per process (when set) and, with ``gpus > 1``, one process per GPU (torchrun; Detectron2 launches
its own workers). So a job runs the same under Snakemake, DVC and by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spark.config import ConfigError, parse_section, require

STAGES = {"prepare": "prepare", "pretrain": "pretrain", "finetune": "finetune", "detection": "detect",
          "tables": "report"}  # each stage of the DAG and the `spark` command its jobs run


@dataclass(frozen=True)
class StageResources:
    """What one job of a stage asks the scheduler for. ``gpus > 1`` launches the stage under torchrun
    (Detectron2: its own launcher) with one process per GPU."""

    gpus: int = 0
    threads: int | None = None  # None: torch's default (all cores) by hand, one under Snakemake
    mem_mb: int = 4000
    runtime: int = 60  # minutes

    def __post_init__(self) -> None:
        for key in ("gpus", "threads", "mem_mb", "runtime"):
            value = getattr(self, key)
            require(value is None or value >= (0 if key == "gpus" else 1), key, f"out of range: {value}")

    @property
    def threads_per_process(self) -> int | None:
        return None if self.threads is None else max(self.threads // max(self.gpus, 1), 1)


def stage_resources(params: dict[str, Any], stage: str) -> StageResources:
    section = {"resources": (params.get("resources") or {}).get(stage) or {}}
    try:
        return parse_section(section, "resources", StageResources)
    except ConfigError as err:
        raise ConfigError(str(err).replace("params: resources.", f"params: resources.{stage}.", 1)) from None
