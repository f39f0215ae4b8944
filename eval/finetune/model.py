"""The classifier to fine-tune: a plain timm model, randomly initialised or loaded from encoder weights."""
from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from eval.arms import SCRATCH
from spark.weights import LoadReport, load_checkpoint


def build_classifier(arch: str, num_classes: int, drop_path_rate: float,
                     init: str | Path = SCRATCH) -> tuple[nn.Module, LoadReport | None]:
    """``timm.create_model(arch)`` with a ``num_classes`` head, then ``init``'s weights unless it is ``scratch``.

    ``init`` is anything :func:`spark.weights.load_checkpoint` reads: our ``encoder.pth`` or full SparK checkpoint,
    or the authors' released checkpoints. Only the classifier head may be missing from it (it stays randomly
    initialised, as does a head of the wrong size, e.g. a 1000-class ``fc``); the report lists both. Weights
    that do not fit ``arch`` raise :class:`spark.weights.CheckpointError`.
    """
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, drop_path_rate=drop_path_rate)
    if str(init) == SCRATCH:
        return model, None
    return model, load_checkpoint(model, init)
