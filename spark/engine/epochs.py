"""The outer loop every training run shares: the epochs after the last checkpoint, with rank 0 writing the
run directory's ``config.yaml``, ``train.log``, per-epoch metrics and checkpoints."""
from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import yaml
from torch import nn

from spark.config import ConfigError
from spark.io import write_json, write_text

from .checkpoint import CHECKPOINT_NAME, checkpoint_due, load_state
from .distributed import DistEnv
from .logs import log_to_file
from .metrics import METRICS_NAME, MetricsLog

CONFIG_NAME = "config.yaml"
LOG_NAME = "train.log"
STALE_CHECKPOINT_NAME = "checkpoint.stale.pth"


class EpochTrainer:
    """Base of the pretraining and fine-tuning runs. A subclass sets ``config`` (with ``epochs`` and
    ``save_every``), ``run_dir``, ``env``, ``model``, ``start_epoch`` and ``history`` in its constructor and
    implements :meth:`run_epoch`, :meth:`save` and :meth:`log_start`.

    A run's results (``metrics.json`` and whatever :meth:`finish` adds) are written only once its last epoch is
    done: a workflow that declares them as outputs never sees them half-made, and a killed run leaves only its
    checkpoint, which the same command resumes."""

    logger: logging.Logger
    config: Any
    run_dir: Path
    env: DistEnv
    model: nn.Module
    start_epoch: int
    history: list[dict[str, float]]

    def fit(self) -> nn.Module:
        """Train the remaining epochs; after each, rank 0 checkpoints (when due) and logs the epoch's record."""
        config, env = self.config, self.env
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / CONFIG_NAME, yaml.safe_dump(self.config_record(), sort_keys=False))
        with log_to_file(self.logger, self.run_dir / LOG_NAME) if env.is_main else nullcontext():
            self.log_start()
            metrics = MetricsLog(self.run_dir, config.epochs, self.logger, self.history) if env.is_main else None
            try:
                for epoch in range(self.start_epoch + 1, config.epochs + 1):
                    record = self.run_epoch(epoch)
                    self.history.append(record)
                    if metrics is not None:
                        if checkpoint_due(epoch, config.epochs, config.save_every):
                            self.save(epoch)
                        metrics.log(epoch, record)
            finally:
                if metrics is not None:
                    metrics.close()
            if env.is_main and self.history:
                self.finish()
        return self.model

    def config_record(self) -> dict[str, Any]:
        """The config as plain YAML values (``config.yaml``, and the checkpoint's record of it)."""
        raise NotImplementedError

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """Train (and evaluate) one epoch, on every rank; returns the epoch's metrics."""
        raise NotImplementedError

    def save(self, epoch: int) -> None:
        """Write the checkpoint after ``epoch`` (rank 0)."""
        raise NotImplementedError

    def log_start(self) -> None:
        """Log what the run is about to do."""
        raise NotImplementedError

    def finish(self) -> None:
        """Rank 0, once the last epoch is done (or was already done): write the run's results."""
        write_json(self.run_dir / METRICS_NAME, {"epoch": len(self.history), **self.history[-1]})


def resume_state(run_dir: Path, env: DistEnv, changed_keys: Callable[[dict[str, Any]], list[str]],
                 restart_on_change: bool = False) -> dict[str, Any] | None:
    """The checkpoint to resume ``run_dir`` from, or None for a fresh run.

    A checkpoint written under other values of the recipe (``changed_keys(state)`` non-empty) is an error, or,
    with ``restart_on_change`` (what the workflows ask for: a changed parameter means recompute), set aside as
    ``checkpoint.stale.pth`` so the run starts over without destroying it.
    """
    state = load_state(run_dir)
    if state is None:
        return None
    changed = changed_keys(state)
    if not changed:
        return state
    path = run_dir / CHECKPOINT_NAME
    if not restart_on_change:
        raise ConfigError(f"{path} was written with different values of {', '.join(changed)}; restore them, "
                          "use a new run directory, or pass --restart-on-change")
    if env.is_main:
        os.replace(path, run_dir / STALE_CHECKPOINT_NAME)
        logging.getLogger(__name__).warning("%s was written with different values of %s: starting over (the old "
                                            "checkpoint is kept as %s)", path, ", ".join(changed), STALE_CHECKPOINT_NAME)
    return None
