"""Per-epoch metrics, written two ways while a run trains: a summary line in the log and dvclive history
(``dvc plots show``). ``metrics.json`` (``dvc metrics show``) is a run's result, written once it completes.

The epoch history is the source of truth and lives in the checkpoint; on resume the dvclive files are rebuilt
from it, so epochs logged after the last checkpoint of a killed run do not appear twice.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

try:  # the pipeline extra; without it the history is in the log, the checkpoint and metrics.json only
    from dvclive import Live
except ImportError:
    Live = None

METRICS_NAME = "metrics.json"
DVCLIVE_DIR = "dvclive"


class MetricsLog:
    """Record a dict of scalars per epoch; dvclive's step is the (1-based) epoch."""

    def __init__(self, run_dir: str | Path, epochs: int, logger: logging.Logger,
                 history: Iterable[dict[str, float]] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.epochs = epochs
        self.logger = logger
        self.history: list[dict[str, float]] = []
        # No dvc.yaml and no experiment: the pipeline's dvc.yaml declares RUN_DIR/dvclive/plots/metrics.
        self.live = Live(str(self.run_dir / DVCLIVE_DIR), resume=False, save_dvc_exp=False, dvcyaml=None) if Live \
            else None
        if self.live is None:
            logger.info("dvclive is not installed (pip install 'spark-repro[pipeline]'): no %s/ curves", DVCLIVE_DIR)
        for epoch, record in enumerate(history, start=1):
            self._append(epoch, record)

    def log(self, epoch: int, record: dict[str, float]) -> None:
        """Append ``epoch``'s metrics and log its summary line."""
        self._append(epoch, record)
        self.logger.info(format_record(epoch, self.epochs, record))

    def close(self) -> None:
        if self.live is not None:
            self.live.end()

    def _append(self, epoch: int, record: dict[str, float]) -> None:
        if epoch != len(self.history) + 1:
            raise ValueError(f"metrics for epoch {epoch} logged after {len(self.history)} epochs")
        if self.live is not None:
            self.live.step = epoch
            for name, value in record.items():
                self.live.log_metric(name, value)
            self.live.next_step()
        self.history.append(dict(record))


def format_record(epoch: int, epochs: int, record: dict[str, float]) -> str:
    """``epoch 3/100  loss 0.6123  lr 0.00015 ...``: the one log line per epoch."""
    values = (f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
              for name, value in record.items())
    return "  ".join([f"epoch {epoch}/{epochs}", *values])
