"""SparK pretraining: :func:`pretrain` a :class:`PretrainConfig` (``spark pretrain``, also under ``torchrun``)."""
from .config import PretrainConfig
from .trainer import pretrain

__all__ = ["PretrainConfig", "pretrain"]
