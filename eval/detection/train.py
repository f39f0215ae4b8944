"""Fine-tune Mask R-CNN from an encoder and evaluate it: Detectron2's ``DefaultTrainer`` with the SparK recipe.

A run directory holds ``config.yaml`` (the full Detectron2 config), ``log.txt``, ``events.jsonl`` (Detectron2's
scalars per logging step), ``dvclive/`` (curves), ``model_*.pth`` + ``last_checkpoint`` (re-running resumes),
``inference/`` (COCO-format predictions), ``metrics.json`` (box and mask AP) and ``run.json`` (provenance).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import DefaultTrainer, launch
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import CommonMetricPrinter, EventWriter, JSONWriter
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from eval.detection.config import DetectionConfig
from eval.detection.convert import load_encoder
from eval.detection.optim import build_optimizer
from eval.detection.recipe import TRAIN_DATASET, VAL_DATASET, build_cfg, train_mapper
from eval.detection.writer import DvcLiveWriter
from eval.arms import SCRATCH
from spark.config import ConfigError
from spark.engine import check_resumable
from spark.io import write_json, write_text
from spark.provenance import recorded_run
from spark.weights import read_encoder_state_dict

RECIPE_NAME = "params.json"
TASKS = ("bbox", "segm")
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
Metrics = dict[str, dict[str, float | None]]
logger = logging.getLogger(__name__)


def has_c_ops() -> bool:
    """Whether Detectron2 was built with its C++ ops (official builds); the PyPI sdist install has none."""
    return importlib.util.find_spec("detectron2._C") is not None


def build_evaluator(dataset_name: str, output_dir: str | Path) -> COCOEvaluator:
    """COCO box and mask AP; the pure-Python COCOeval when the fast C++ one is missing."""
    return COCOEvaluator(dataset_name, tasks=TASKS, output_dir=str(output_dir), use_fast_impl=has_c_ops())


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with AdamW + layer-wise lr decay, the recipe's training augmentations, COCO evaluation,
    and JSON/dvclive writers."""

    @classmethod
    def build_optimizer(cls, cfg, model) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=train_mapper(cfg))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str) -> COCOEvaluator:
        return build_evaluator(dataset_name, Path(cfg.OUTPUT_DIR) / "inference")

    def state_dict(self) -> dict:
        """Detectron2 0.6 checkpoints the iteration and the lr scheduler but not the optimizer its inner trainer
        steps: a resumed run would restart AdamW's moments and take one step at the warmup's first lr. Later
        Detectron2 versions save it the same way."""
        return {**super().state_dict(), "_trainer": self._trainer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])

    def build_writers(self) -> list[EventWriter]:
        out = Path(self.cfg.OUTPUT_DIR)
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(str(out / "events.jsonl")),
            DvcLiveWriter(out / "dvclive", resume=self.checkpointer.has_checkpoint()),
        ]


def _datasets(config: DetectionConfig) -> list[tuple[str, Path, Path]]:
    return [(TRAIN_DATASET, config.path(config.train_json), config.path(config.train_images)),
            (VAL_DATASET, config.path(config.val_json), config.path(config.val_images))]


def check_data(config: DetectionConfig) -> None:
    """Fail naming the key before anything is written or launched if an annotation file or image folder is missing."""
    for _, json_file, images in _datasets(config):
        for path in (json_file, images):
            if not path.exists():
                raise ConfigError(f"params: detection.data_root: {path} not found (data_root={config.data_root})")


def register_datasets(config: DetectionConfig) -> int:
    """Register the train and val sets under the recipe's fixed names (replacing earlier ones); → class count."""
    check_data(config)
    for name, json_file, images in _datasets(config):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, {}, str(json_file), str(images))
    # Loading each JSON records its class names and id mapping in the metadata; the evaluator maps the model's
    # contiguous ids back to COCO ids through the val set's, so both must be loaded and agree.
    for name in (TRAIN_DATASET, VAL_DATASET):
        DatasetCatalog.get(name)
    train, val = MetadataCatalog.get(TRAIN_DATASET), MetadataCatalog.get(VAL_DATASET)
    if train.thing_dataset_id_to_contiguous_id != val.thing_dataset_id_to_contiguous_id:
        raise ConfigError(f"params: detection.val_json: {config.path(config.val_json)} has other categories than "
                          f"{config.path(config.train_json)}")
    return len(train.thing_classes)


def summarize(results: Mapping[str, Mapping[str, float]]) -> Metrics:
    """The six COCO numbers per task. NaN (no ground truth of that size) becomes null: the JSON stays valid."""
    return {
        task: {m: float(results[task][m]) if math.isfinite(results[task][m]) else None for m in COCO_METRICS}
        for task in TASKS
    }


def train(config: DetectionConfig, init: str, out: str | Path) -> Metrics | None:
    """Train and evaluate in this process (one DDP worker under :func:`run`); the main process writes metrics.json.

    ``init`` is ``"scratch"`` (random init) or a checkpoint :func:`read_encoder_state_dict` reads: our
    ``encoder.pth``, the authors' timm-style or full SparK checkpoints. A run directory with a checkpoint resumes.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("detectron2", "eval"):
        setup_logger(str(out), distributed_rank=comm.get_rank(), name=name)
    trainer = build_trainer(config, init, out)
    trainer.train()
    if not comm.is_main_process():
        return None
    metrics = summarize(trainer._last_eval_results)  # set by DefaultTrainer's final evaluation
    write_json(out / "metrics.json", metrics)
    return metrics


def build_trainer(config: DetectionConfig, init: str, out: Path) -> Trainer:
    """The trainer :func:`train` runs, its model as training starts: a checkpoint in ``out`` if there is one (a
    resumed run), else ``init``'s encoder in the backbone (random for ``"scratch"``)."""
    encoder = None if init == SCRATCH else read_encoder_state_dict(init)
    num_classes = register_datasets(config)
    cfg = build_cfg(config, num_classes, out, comm.get_world_size())
    seed_all_rng(config.seed + comm.get_rank())
    if comm.is_main_process():
        write_text(out / "config.yaml", cfg.dump())

    trainer = Trainer(cfg)
    if encoder is not None:
        model = trainer.model.module if isinstance(trainer.model, DistributedDataParallel) else trainer.model
        load_encoder(model.backbone.bottom_up, encoder)
        logger.info("initialised every backbone parameter and buffer from %s", init)
    trainer.resume_or_load(resume=True)  # a checkpoint in `out` takes precedence over the init
    return trainer


def run(config: DetectionConfig, init: str, out: str | Path, num_gpus: int, restart_on_change: bool = False) -> None:
    """:func:`train` on ``num_gpus`` GPUs with DDP and SyncBN (Detectron2's ``launch``), or in this process.

    ``RUN_DIR/params.json`` records the config and init the checkpoints belong to: resuming under other values is an
    error, or with ``restart_on_change`` the old checkpoints move to ``stale/`` and training starts over.
    """
    out = Path(out)
    check_data(config)
    recipe = {**dataclasses.asdict(config), "init": init}
    _check_resumable(out, json.loads(json.dumps(recipe)), restart_on_change)
    write_json(out / RECIPE_NAME, recipe)
    with recorded_run(out, "detection", dataclasses.asdict(config), config.seed) as info:
        info.update(init=init, num_gpus=num_gpus, precision="fp32 (Detectron2 without AMP)",
                    dist_timeout_minutes=config.dist_timeout_minutes)
        launch(train, num_gpus_per_machine=max(num_gpus, 1), dist_url="auto", args=(config, init, str(out)),
               timeout=timedelta(minutes=config.dist_timeout_minutes))


def _check_resumable(out: Path, recipe: dict, restart_on_change: bool) -> None:
    """The shared resume policy (:func:`spark.engine.check_resumable`) over Detectron2's checkpoints, which are
    set aside into ``stale/``."""
    last, recorded_path = out / "last_checkpoint", out / RECIPE_NAME
    if not last.is_file() or not recorded_path.is_file():
        return
    recorded = json.loads(recorded_path.read_text())
    changed = sorted(k for k in recipe.keys() | recorded.keys()
                     if k not in DetectionConfig.RESUMABLE and recipe.get(k) != recorded.get(k))

    def set_aside() -> None:
        (out / "stale").mkdir(exist_ok=True)
        for path in [*out.glob("model_*.pth"), last]:
            os.replace(path, out / "stale" / path.name)

    check_resumable(out, changed, restart_on_change, set_aside, f"the old checkpoints are in {out / 'stale'}")
