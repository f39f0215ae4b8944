"""How often the workflow resubmits a training job: as often as its run needs jobs within the time limit.

A run longer than ``resources.<stage>.runtime`` stops before each job's limit and continues in the next
(:mod:`spark.engine.run`); Snakemake's ``retries`` must allow for that many jobs. How long a run takes comes
from ``spark estimate``'s JSON (:attr:`eval.pipeline.dag.Layout.estimate`). Read by the Snakefile only: no stage's
code depends on it.
"""
from __future__ import annotations

import math
from typing import Any

from spark.config import ConfigError

from .resources import stage_resources
from .stages import STAGES


def jobs_needed(hours: float, runtime_min: int, stop_margin_s: float) -> int:
    """How many jobs of ``runtime_min`` minutes a run of ``hours`` (wall time) takes when each job stops
    ``stop_margin_s`` before its time limit (at least one)."""
    usable = runtime_min - stop_margin_s / 60
    if usable <= 0:
        raise ConfigError(f"params: a job time limit of {runtime_min} min leaves no time to train before its stop "
                          f"margin of {stop_margin_s:g} s")
    return max(math.ceil(hours * 60 / usable - 1e-9), 1)


def resubmissions(params: dict[str, Any], stage: str, estimate: dict[str, Any] | None) -> int:
    """Snakemake's ``retries`` for a training stage's jobs: from ``estimate`` (``spark estimate``'s JSON, None
    where there is none), the most jobs any of the stage's runs needs within ``resources.<stage>.runtime`` less
    the stage's ``stop_margin_s``, minus one (the first submission), plus one spare for an ordinary failure or
    cancellation. Without an estimate: 1 (the spare alone)."""
    if estimate is None:
        return 1
    runtime = stage_resources(params, stage).runtime
    margin = (params.get(stage) or {}).get("stop_margin_s", default_stop_margin_s(stage))
    hours = [float(job["hours"]) for job in estimate.get("jobs", []) if job.get("stage") == stage]
    most = max((jobs_needed(h, runtime, margin) for h in hours), default=1)
    return most  # most - 1 resubmissions finish the longest run; one more is the spare


def default_stop_margin_s(stage: str) -> float:
    """How long before its time limit a job of ``stage`` stops when its section sets no ``stop_margin_s``: its
    section's default (a :class:`~spark.engine.run.TrainingConfig`'s); none for a section without one, such
    as detection's (Detectron2 runs to its time limit and resumes from its last periodic checkpoint)."""
    return getattr(STAGES[stage].section(), "stop_margin_s", 0)
