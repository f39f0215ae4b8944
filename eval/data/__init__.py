"""Data for every stage: the embedded mini benchmark (mini-in, mini-coco), checks of user ImageNet/COCO, and your own
folders (:mod:`eval.data.own`).

``spark prepare`` (:func:`eval.data.prepare.prepare`) is the stage; later stages locate what it prepared with
:func:`classification_data` and :func:`detection_data`.
"""
from eval.data.config import CocoConfig, DataConfig, ImageNetConfig, MiniCocoConfig, MiniInConfig
from eval.data.errors import DataError
from eval.data.mini_coco import build_mini_coco
from eval.data.mini_in import build_mini_in
from eval.data.paths import ClassificationData, CocoSplit, DetectionData, classification_data, detection_data
from eval.data.validate import validate_coco, validate_image_folder

__all__ = [
    "ClassificationData", "CocoConfig", "CocoSplit", "DataConfig", "DataError", "DetectionData", "ImageNetConfig",
    "MiniCocoConfig", "MiniInConfig", "build_mini_coco", "build_mini_in", "classification_data", "detection_data",
    "validate_coco", "validate_image_folder",
]
