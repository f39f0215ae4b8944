"""ImageNet fine-tuning of a (SparK-pretrained) encoder with the authors' per-model recipes:
``python -m eval.finetune`` (also under ``torchrun``)."""
from .config import FinetuneConfig, load_finetune_config, parse_finetune
from .model import SCRATCH, build_classifier
from .recipes import RECIPES, Recipe
from .trainer import finetune

__all__ = ["RECIPES", "SCRATCH", "FinetuneConfig", "Recipe", "build_classifier", "finetune", "load_finetune_config",
           "parse_finetune"]
