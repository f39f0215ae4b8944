"""ImageNet fine-tuning of a (SparK-pretrained) encoder with the authors' per-model recipes (``spark finetune``,
also under ``torchrun``)."""
from .config import FinetuneConfig
from .model import build_classifier
from .recipes import RECIPES, Recipe
from .trainer import finetune

__all__ = ["RECIPES", "FinetuneConfig", "Recipe", "build_classifier", "finetune"]
