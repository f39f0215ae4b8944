"""SparK: BERT-style sparse and hierarchical masked modeling for any timm convnet (arXiv 2301.03580)."""
from .checkpoint import CheckpointError, LoadReport, load_checkpoint, read_encoder_state_dict
from .model import SparK, build_spark
from .sparse import ActiveMask, convert_sync_batchnorm, sparsify

__all__ = [
    "ActiveMask",
    "CheckpointError",
    "LoadReport",
    "SparK",
    "build_spark",
    "convert_sync_batchnorm",
    "load_checkpoint",
    "read_encoder_state_dict",
    "sparsify",
]
