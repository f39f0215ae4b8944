"""SparK pretraining: ``spark pretrain`` / ``python -m spark.pretrain`` (also under ``torchrun``)."""
from .config import PretrainConfig, build_model, load_pretrain_config
from .trainer import pretrain

__all__ = ["PretrainConfig", "build_model", "load_pretrain_config", "pretrain"]
