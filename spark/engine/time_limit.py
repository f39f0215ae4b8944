"""Runs longer than their job's time limit: stop at an epoch boundary before the scheduler ends the job.

Clusters cap a job's wall time (often 24-72 h) far below a paper run's (weeks on one node). Before each epoch the
trainer asks :class:`TimeLimit` whether the epoch, at the pace of this job's slowest epoch so far (or, before the
first, the pace the run's history records), still ends ``margin_s`` before the limit. If not, it checkpoints and
stops with :class:`TimeLimitReached` (exit code 75); the workflow resubmits the job (Snakemake's retries) and the
next job resumes after the last completed epoch, so nothing is computed twice. If a job is killed all the same (an
epoch far slower than the last), what is lost is back to the last checkpoint.

The limit is SLURM's: ``SLURM_JOB_END_TIME`` where SLURM sets it, else the end time ``squeue`` reports for
``SLURM_JOB_ID`` (which follows ``scontrol update TimeLimit``). Outside SLURM there is none.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Mapping

from spark.errors import RunError

logger = logging.getLogger(__name__)

RESUBMIT = 75  # EX_TEMPFAIL: the job stopped early on purpose; running it again continues the run


class TimeLimitReached(RunError):
    """The run stopped after a checkpointed epoch, before its job's time limit; rerun the command to continue."""

    exit_code = RESUBMIT


def slurm_end_time(environ: Mapping[str, str] = os.environ) -> float | None:
    """When SLURM ends this job (seconds since the epoch), or None outside SLURM and for jobs without a limit."""
    if environ.get("SLURM_JOB_END_TIME", "").isdigit():
        return float(environ["SLURM_JOB_END_TIME"])
    job = environ.get("SLURM_JOB_ID")
    if not job or not shutil.which("squeue"):
        return None
    try:
        end = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True,
                             timeout=60).stdout.strip()
        return datetime.fromisoformat(end).timestamp()
    except (OSError, subprocess.SubprocessError, ValueError):  # "N/A", "Unknown", "NONE": no limit known
        return None


@dataclass
class TimeLimit:
    """Whether another epoch fits before ``end`` (seconds since the epoch; None: no limit)."""

    end: float | None
    margin_s: float
    clock: Callable[[], float] = time.time
    epoch_seconds: list[float] = field(default_factory=list)  # this job's epochs, checkpoint and logging included
    _started: float | None = None

    def start_epoch(self) -> None:
        self._started = self.clock()

    def end_epoch(self) -> None:
        self.epoch_seconds.append(self.clock() - self._started)

    def left(self) -> float:
        return self.end - self.clock() - self.margin_s

    def allows_epoch(self, recorded_seconds: float | None = None) -> bool:
        """Whether the next epoch ends ``margin_s`` before the limit, at this job's slowest epoch's pace (before
        the first: ``recorded_seconds``, the run's recorded pace; unknown: yes)."""
        if self.end is None:
            return True
        pace = max(self.epoch_seconds, default=recorded_seconds)
        return pace is None or pace <= self.left()

    def describe(self) -> str:
        if self.end is None:
            return "no job time limit"
        end = datetime.fromtimestamp(self.end)
        return f"the job ends at {end:%Y-%m-%d %H:%M:%S}, stopping {self.margin_s:.0f} s before it at an epoch boundary"
