"""What a run leaves as it trains: its checkpoint (what the same command resumes from), per-epoch metrics (a log
line and dvclive curves), a log file, and a progress bar on the terminal.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from tqdm import tqdm

from spark.io import load_torch, save_torch

from .step import NonFiniteError

try:  # the pipeline extra; without it the history is in the log, the checkpoint and metrics.json only
    from dvclive import Live
except ImportError:
    Live = None

CHECKPOINT_NAME = "checkpoint.pth"
METRICS_NAME = "metrics.json"  # a run's result (``dvc metrics show``), written once its last epoch is done
ENCODER_NAME = "encoder.pth"  # the trunk a run exports in plain timm names: what downstream stages start from
DVCLIVE_DIR = "dvclive"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def checkpoint_due(epoch: int, epochs: int, every: int) -> bool:
    """Whether to save after (1-based) ``epoch``: every ``every`` epochs and always after the last one."""
    return epoch % every == 0 or epoch == epochs


def save_state(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to the run's checkpoint, replaced atomically, refusing non-finite tensors so the last good one
    survives. It holds only tensors and plain containers, so it loads with ``weights_only=True``."""
    for key, tensor in _tensors(state, ""):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NonFiniteError(f"not saving {CHECKPOINT_NAME}: {key} has non-finite values")
    path = Path(run_dir) / CHECKPOINT_NAME
    save_torch(state, path)
    return path


def load_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's checkpoint (weights only), or None for a fresh run."""
    path = Path(run_dir) / CHECKPOINT_NAME
    return load_torch(path) if path.is_file() else None


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}[{i}]")


class MetricsLog:
    """Record a dict of scalars per epoch: a summary line in the log and dvclive history (``dvc plots show``);
    dvclive's step is the (1-based) epoch. The history is the source of truth and lives in the checkpoint: on resume
    the dvclive files are rebuilt from it, so epochs logged after a killed run's last checkpoint do not appear twice."""

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


def setup_logging() -> None:
    """Console logging at INFO on rank 0 and WARNING elsewhere: under torchrun, one process reports progress."""
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=LOG_FORMAT)


@contextmanager
def log_to_file(logger: logging.Logger, path: str | Path) -> Iterator[None]:
    """Append ``logger``'s records (INFO and up) to ``path`` inside the block; a resumed run appends."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(previous_level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        handler.close()


def epoch_bar(epoch: int, epochs: int, images: int, enabled: bool = True) -> tqdm:
    """A bar over the ``images`` of one epoch (img/s and ETA; loss and lr as a postfix); advance it with
    ``bar.update(batch_images)``. Shown on rank 0 and on a terminal only, so log files get the epoch's summary line
    instead of carriage-return noise."""
    return tqdm(total=images, desc=f"epoch {epoch}/{epochs}", unit="img", unit_scale=True, dynamic_ncols=True,
                leave=False, disable=None if enabled else True)
