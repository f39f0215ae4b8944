"""Detectron2 event scalars (losses, lr, AP) as dvclive curves, so ``dvc plots`` shows detection training."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from detectron2.utils.events import EventWriter, get_event_storage
from dvclive import Live


class DvcLiveWriter(EventWriter):
    """Logs every scalar newer than the last write at its own iteration (dvclive step = Detectron2 iteration)."""

    def __init__(self, live_dir: str | Path, resume: bool, window_size: int = 20) -> None:
        # No dvc.yaml or DVC experiment from here: the pipeline's dvc.yaml declares the plots.
        self._live = Live(str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None)
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, it) in get_event_storage().latest_with_smoothing_hint(self._window_size).items():
            if it > self._last_write and math.isfinite(value):  # NaN AP (no object of a size) is not a point
                by_iter[it][name] = value
        for it in sorted(by_iter):
            self._live.step = it
            for name, value in by_iter[it].items():
                self._live.log_metric(name, value)
        if by_iter:
            self._live.make_summary()
            self._last_write = max(by_iter)

    def close(self) -> None:
        self._live.end()
