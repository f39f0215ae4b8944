"""The fine-tuning run (:func:`finetune`): a timm classifier on an ImageFolder, in one resumable run directory.

``RUN_DIR`` receives ``checkpoint.pth`` (model, EMA, optimizer, history: everything to resume), ``metrics.json``
(last epoch's top-1/top-5 of the model and of its EMA, the best epoch, the init source and its load report),
``encoder.pth`` (the final model's trunk in plain timm names: a from-scratch run with all labels is the DAG's own
supervised classifier, the supervised arm of detection), ``dvclive/`` (per-epoch curves), ``config.yaml``,
``train.log`` and ``run.json``. Running the same command again continues after the last checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from timm.layers import convert_sync_batchnorm
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torch.utils.data import Subset

from spark.encoder import head_keys
from spark.engine import ENCODER_NAME, DistEnv, EpochTrainer, eval_loader, run_training, seed_all, train_loader, unwrap
from spark.images import image_folders
from spark.io import save_torch

from .config import FinetuneConfig
from .data import batch_mixer, eval_transform, label_split, train_transform
from .evaluate import average_buffers, topk_accuracy
from .loss import build_criterion
from .model import SCRATCH, build_classifier
from .optim import build_optimizer

logger = logging.getLogger("eval.finetune")

EMA_PREFIX = "ema_"


def finetune(config: FinetuneConfig, run_dir: str | Path, init: str | Path = SCRATCH,
             restart_on_change: bool = False) -> nn.Module:
    """Fine-tune into ``run_dir`` (resuming it if it holds a checkpoint) in this process's torchrun group.

    ``init`` is ``scratch`` or weights :func:`spark.weights.load_checkpoint` reads; a resumed run must name the
    same one and the same recipe, or with ``restart_on_change`` it starts over (see
    :func:`spark.engine.run.resume_state`). Returns the final model (not the EMA), unwrapped, on this rank's device.
    """
    return run_training("finetune", config,
                        lambda env: Finetuner(config, Path(run_dir), env, str(init), restart_on_change))


class Finetuner(EpochTrainer):
    """Fine-tuning's parts of the run: the classifier and its EMA, Mixup/CutMix, evaluation, the summary."""

    logger = logger
    config: FinetuneConfig

    def __init__(self, config: FinetuneConfig, run_dir: Path, env: DistEnv, init: str,
                 restart_on_change: bool = False) -> None:
        self.init = init
        super().__init__(config, run_dir, env, restart_on_change)
        state = self.state
        train_set, val_set = image_folders(
            config.data, train_transform(config.input_size, config.augment, config.erase_prob, config.crop_scale),
            eval_transform(config.input_size, config.eval_crop), "finetune.data")
        self.num_classes = len(train_set.classes)
        if config.label_fraction < 1:
            train_set = Subset(train_set, label_split(train_set.targets, config.label_fraction, config.seed))
        self.iters = self.iterations(len(train_set), f"training images of {config.data}")

        seed_all(config.seed)  # the same initial head (and scratch weights) on every rank and in every run
        model, report = build_classifier(config.arch, self.num_classes, config.drop_path_rate,
                                         SCRATCH if state is not None else init)
        if state is not None:
            model.load_state_dict(state["model"])
            self.load_report: dict[str, Any] | None = state["load_report"]
        else:
            self.load_report = dataclasses.asdict(report) if report is not None else None
        self.criterion = build_criterion(config.loss_name)
        self.mixer = batch_mixer(self.num_classes, mixup=config.mixup, cutmix=config.cutmix,
                                 switch_prob=config.mix_switch_prob, smoothing=config.label_smoothing)
        model = self.place(model)
        self.ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=config.ema_warmup)
        if state is not None:
            self.ema.module.load_state_dict(state["ema"])
        if env.is_distributed and env.device.type == "cuda":  # the reference syncs BN; torch has no CPU kernel
            model = convert_sync_batchnorm(model)  # keeps BatchNormAct2d's activation; torch's drops it
        self.optimizer = build_optimizer(model, config.optimizer, config.peak_lr, config.weight_decay,
                                         config.layer_decay)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.wrap(model)
        batch = config.global_batch // env.world_size
        self.loader = train_loader(train_set, batch_size=batch, env=env, seed=config.seed,
                                   num_workers=config.num_workers, repeats=config.aug_repeats)
        self.val_loader = eval_loader(val_set, batch_size=2 * batch, env=env, num_workers=config.num_workers)

    def changed_keys(self, state: dict[str, Any]) -> list[str]:
        """Changed recipe keys, or another init."""
        return super().changed_keys(state) + (["init"] if state["init"] != self.init else [])

    def batch_inputs(self, batch: tuple[Tensor, Tensor]) -> tuple[tuple[Tensor, Tensor], int, int]:
        images, targets = batch
        device = self.env.device
        mixed = self.mixer(self.precision.prepare_input(images, device), targets.to(device, non_blocking=True))
        return mixed, len(images), 0

    def model_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, targets = batch
        return self.criterion(model(images), targets)

    def example_inputs(self, size: int) -> tuple[Tensor, Tensor]:
        """``size`` samples of a mixed batch (mixing pairs samples, so it mixes twice as many; training mixes a
        rank's whole batch before splitting it into micro-batches too)."""
        size_px = self.config.input_size
        images, targets = torch.randn(2 * size, 3, size_px, size_px), torch.randint(self.num_classes, (2 * size,))
        return tuple(t[:size] for t in self.batch_inputs((images, targets))[0])

    def after_step(self, step: int) -> None:
        self.ema.update(self.model, step=step + 1 if self.config.ema_warmup else None)

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch, then (every ``eval_every`` epochs and after the last) evaluate the model and its EMA."""
        record = self.train_epoch(epoch)
        if epoch % self.config.eval_every == 0 or epoch == self.config.epochs:
            record.update(self.evaluate())
            record.update(best_record([*self.history, record]))
        return record

    def evaluate(self) -> dict[str, float]:
        """Top-1/top-5 (%) of the model and of its EMA on the validation set (BN statistics averaged over ranks
        first, so every rank evaluates and rank 0 checkpoints the same models)."""
        average_buffers(self.model)
        average_buffers(self.ema.module)
        model = topk_accuracy(self.model, self.val_loader, self.env, self.precision)
        ema = topk_accuracy(self.ema.module, self.val_loader, self.env, self.precision)
        return {**model, **{EMA_PREFIX + k: v for k, v in ema.items()}}

    def extra_state(self) -> dict[str, Any]:
        return {"ema": self.ema.module.state_dict(), "init": self.init, "load_report": self.load_report}

    def run_info(self) -> dict[str, Any]:
        return {"init": self.init, **super().run_info()}

    def finish(self) -> None:
        """``metrics.json`` and the final model's trunk (the model whose top-1 the tables report, not the EMA)."""
        head = head_keys(self.config.arch)
        trunk = {k: v for k, v in unwrap(self.model).state_dict().items() if k not in head}
        save_torch(trunk, self.run_dir / ENCODER_NAME)
        super().finish()

    def summary(self) -> dict[str, Any]:
        """``metrics.json``: the last epoch's record, which of model/EMA was best, and where the weights came from."""
        _, prefix = best_evaluation(self.history)
        return {**super().summary(), "best_model": "ema" if prefix else "final",
                "init": self.init, "load_report": self.load_report, "num_classes": self.num_classes}

    def log_start(self) -> None:
        if not self.start_epoch and self.load_report is None:
            logger.info("initialised from scratch")
        elif not self.start_epoch:
            logger.info("initialised from %s (%s layout); left as initialised: %s; not used: %s", self.init,
                        self.load_report["layout"], ", ".join(self.load_report["missing"]) or "none",
                        ", ".join(self.load_report["ignored"]) or "none")
        super().log_start()  # and the resume, if it is one

    def describe(self) -> str:
        config = self.config
        scales = [group["lr_scale"] for group in self.optimizer.param_groups]
        return (f"{config.arch} {config.input_size}px, {self.num_classes} classes, recipe {config.recipe}, "
                f"{config.optimizer} (lr scale {min(scales):.3g}..1), {config.loss_name} loss")


def best_evaluation(history: list[dict[str, float]]) -> tuple[int, str]:
    """(epoch index, key prefix: "" for the model, "ema_" for its EMA) of the best top-1 in ``history``; on ties
    the earliest epoch, and the model before its EMA."""
    return max(((i, prefix) for i in range(len(history)) if "top1" in history[i] for prefix in ("", EMA_PREFIX)),
               key=lambda best: (history[best[0]][best[1] + "top1"], -best[0]))


def best_record(history: list[dict[str, float]]) -> dict[str, float]:
    """The best evaluation's top-1, top-5 and (1-based) epoch, as per-epoch metrics."""
    epoch, prefix = best_evaluation(history)
    return {"best_top1": history[epoch][prefix + "top1"], "best_top5": history[epoch][prefix + "top5"],
            "best_epoch": epoch + 1}
