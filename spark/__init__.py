"""SparK: BERT-style sparse and hierarchical masked modeling for any timm convnet (arXiv 2301.03580).

The public names load lazily, so that ``spark.data`` and the CLIs do not pay for importing torch and timm
until they use the model.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ActiveMask": "spark.sparse",
    "convert_sync_batchnorm": "spark.sparse",
    "sparsify": "spark.sparse",
    "SparK": "spark.model",
    "build_spark": "spark.model",
    "CheckpointError": "spark.checkpoint",
    "LoadReport": "spark.checkpoint",
    "load_checkpoint": "spark.checkpoint",
    "read_encoder_state_dict": "spark.checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'spark' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
