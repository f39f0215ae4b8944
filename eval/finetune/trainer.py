"""The fine-tuning run: one run directory, resumable, the same code on a laptop and under torchrun.

``RUN_DIR`` receives ``checkpoint.pth`` (model, EMA, optimizer, history: everything to resume), ``metrics.json``
(last epoch's top-1/top-5 of the model and of its EMA, the best epoch, the init source and its load report),
``dvclive/`` (per-epoch curves), ``config.yaml``, ``train.log`` and ``run.json``. Running the same command again
continues after the last checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from timm.layers import convert_sync_batchnorm
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torch.utils.data import Subset

from spark.config import ConfigError, to_dict
from spark.engine import (
    METRICS_NAME, DistEnv, EpochTrainer, Precision, all_reduce_sum, apply_lr_wd,
    derive_seed, distributed_env, epoch_bar, resume_state, save_state, seed_all, set_deterministic, set_epoch,
    train_loader, train_step, unwrap, warmup_cosine, wrap_ddp,
)
from spark.io import write_json
from spark.provenance import recorded_run

from .config import FinetuneConfig
from .data import batch_mixer, eval_transform, image_folders, label_split, train_transform
from .evaluate import average_buffers, eval_loader, topk_accuracy
from .loss import build_criterion
from .model import SCRATCH, build_classifier
from .optim import build_optimizer

logger = logging.getLogger("eval.finetune")

EMA_PREFIX = "ema_"


def finetune(config: FinetuneConfig, run_dir: str | Path, init: str | Path = SCRATCH,
             restart_on_change: bool = False) -> nn.Module:
    """Fine-tune into ``run_dir`` (resuming it if it holds a checkpoint) in this process's torchrun group.

    ``init`` is ``scratch`` or weights :func:`spark.load_checkpoint` reads; a resumed run must name the same one
    and the same recipe, or with ``restart_on_change`` it starts over (see :func:`spark.engine.resume_state`).
    Returns the final model (not the EMA), unwrapped, on this rank's device.
    """
    with distributed_env() as env:
        config.check_world_size(env.world_size)
        trainer = Finetuner(config, Path(run_dir), env, str(init), restart_on_change)
        provenance = recorded_run(run_dir, "finetune", to_dict(config), config.seed) if env.is_main else nullcontext({})
        with provenance as info:
            info.update(init=trainer.init, resumed=trainer.start_epoch > 0, precision=trainer.precision.describe())
            return trainer.fit()


class Finetuner(EpochTrainer):
    """Builds the run (data, model, EMA, optimizer, resume state) and trains it epoch by epoch."""

    logger = logger

    def __init__(self, config: FinetuneConfig, run_dir: Path, env: DistEnv, init: str,
                 restart_on_change: bool = False) -> None:
        self.config, self.run_dir, self.env, self.init = config, run_dir, env, init
        set_deterministic(config.deterministic)
        state = resume_state(run_dir, env, lambda s: _changed_keys(config, init, s), restart_on_change)
        train_set, val_set = image_folders(
            config.data, train_transform(config.input_size, config.augment, config.erase_prob, config.crop_scale),
            eval_transform(config.input_size, config.eval_crop))
        self.num_classes = len(train_set.classes)
        if config.label_fraction < 1:
            train_set = Subset(train_set, label_split(train_set.targets, config.label_fraction, config.seed))
        self.iters = len(train_set) // config.global_batch
        if self.iters == 0:
            raise ConfigError(f"params: finetune.global_batch: {config.global_batch} exceeds the {len(train_set)} "
                              f"training images of {config.data}")

        seed_all(config.seed)  # the same initial head (and scratch weights) on every rank and in every run
        model, report = build_classifier(config.arch, self.num_classes, config.drop_path_rate,
                                         SCRATCH if state is not None else init)
        if state is not None:
            model.load_state_dict(state["model"])
            self.load_report: dict[str, Any] | None = state["load_report"]
        else:
            self.load_report = dataclasses.asdict(report) if report is not None else None
        self.precision = Precision.resolve(config.precision, config.channels_last, env.device)
        model = self.precision.prepare_model(model.to(env.device))
        self.ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=config.ema_warmup)
        if state is not None:
            self.ema.module.load_state_dict(state["ema"])
        if env.is_distributed and env.device.type == "cuda":  # the reference syncs BN; torch has no CPU kernel
            model = convert_sync_batchnorm(model)  # keeps BatchNormAct2d's activation; torch's drops it
        self.model = model
        self.optimizer = build_optimizer(model, config.optimizer, config.peak_lr, config.weight_decay,
                                         config.layer_decay)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        distributed = wrap_ddp(model, env)
        self.step_model = torch.compile(distributed) if config.compile else distributed
        self.criterion = build_criterion(config.loss_name)
        self.mixer = batch_mixer(self.num_classes, mixup=config.mixup, cutmix=config.cutmix,
                                 switch_prob=config.mix_switch_prob, smoothing=config.label_smoothing)

        self.start_epoch = state["epoch"] if state is not None else 0
        self.history: list[dict[str, float]] = state["history"] if state is not None else []
        batch = config.global_batch // env.world_size
        self.loader = train_loader(train_set, batch_size=batch, env=env, seed=config.seed,
                                   num_workers=config.num_workers)
        self.val_loader = eval_loader(val_set, batch_size=2 * batch, env=env, num_workers=config.num_workers)

    def config_record(self) -> dict[str, Any]:
        return to_dict(self.config)

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch, then (every ``eval_every`` epochs and after the last) evaluate the model and its EMA."""
        record = self.train_epoch(epoch)
        if epoch % self.config.eval_every == 0 or epoch == self.config.epochs:
            record.update(self.evaluate())
            record.update(best_record([*self.history, record]))
        return record

    def finish(self) -> None:
        write_json(self.run_dir / METRICS_NAME, self.summary())

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; returns the epoch's training metrics (averaged over iterations)."""
        config, env = self.config, self.env
        seed_all(derive_seed(config.seed, epoch, env.rank))  # Mixup and drop-path draws, reproducible on resume
        set_epoch(self.loader, epoch)
        self.model.train()
        total_iters, warmup_iters = config.epochs * self.iters, config.warmup_epochs * self.iters
        loss_sum = grad_norm_sum = 0.0
        images_done = torch.zeros((), dtype=torch.long)
        bar = epoch_bar(epoch, config.epochs, self.iters * config.global_batch, enabled=env.is_main)
        start = time.perf_counter()
        for it, (images, targets) in enumerate(self.loader):
            step = (epoch - 1) * self.iters + it
            lr = warmup_cosine(step, config.peak_lr, warmup_iters, total_iters)
            apply_lr_wd(self.optimizer, lr, config.weight_decay)
            batch = self.mixer(self.precision.prepare_input(images, env.device),
                               targets.to(env.device, non_blocking=True))
            result = train_step(self.step_model, self.optimizer, batch, self._loss,
                                where=f"epoch {epoch}/{config.epochs}, iteration {it + 1}/{self.iters}",
                                micro_batch=config.micro_batch, clip=config.clip or None, precision=self.precision)
            self.ema.update(self.model, step=step + 1 if config.ema_warmup else None)
            loss_sum += result.loss
            grad_norm_sum += result.grad_norm
            images_done += len(images)
            bar.update(len(images) * env.world_size)
            bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.3g}", refresh=False)
        bar.close()
        images_total = all_reduce_sum(images_done.to(env.device)).item()
        return {
            "loss": loss_sum / self.iters,
            "lr": lr,
            "grad_norm": grad_norm_sum / self.iters,
            "img_per_s": images_total / (time.perf_counter() - start),
        }

    def evaluate(self) -> dict[str, float]:
        """Top-1/top-5 (%) of the model and of its EMA on the validation set (BN statistics averaged over ranks
        first, so every rank evaluates and rank 0 checkpoints the same models)."""
        average_buffers(self.model)
        average_buffers(self.ema.module)
        model = topk_accuracy(self.model, self.val_loader, self.env, self.precision)
        ema = topk_accuracy(self.ema.module, self.val_loader, self.env, self.precision)
        return {**model, **{EMA_PREFIX + k: v for k, v in ema.items()}}

    def save(self, epoch: int) -> None:
        """Checkpoint after ``epoch`` (rank 0)."""
        save_state(self.run_dir, {
            "model": unwrap(self.model).state_dict(),
            "ema": self.ema.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "config": self.config_record(),
            "history": self.history,
            "init": self.init,
            "load_report": self.load_report,
        })

    def summary(self) -> dict[str, Any]:
        """``metrics.json``: the last epoch's record, which of model/EMA was best, and where the weights came from."""
        _, prefix = best_evaluation(self.history)
        return {"epoch": len(self.history), **self.history[-1], "best_model": "ema" if prefix else "final",
                "init": self.init, "load_report": self.load_report, "num_classes": self.num_classes}

    def _loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, targets = batch
        return self.criterion(self.step_model(images), targets)

    def log_start(self) -> None:
        config, env = self.config, self.env
        if self.start_epoch:
            logger.info("resuming %s after epoch %d/%d", self.run_dir, self.start_epoch, config.epochs)
        elif self.load_report is None:
            logger.info("initialised from scratch")
        else:
            logger.info("initialised from %s (%s layout); left as initialised: %s; not used: %s", self.init,
                        self.load_report["layout"], ", ".join(self.load_report["missing"]) or "none",
                        ", ".join(self.load_report["ignored"]) or "none")
        scales = [group["lr_scale"] for group in self.optimizer.param_groups]
        logger.info("%s %dpx, %d classes, recipe %s: %d iterations/epoch of %d images (%d per rank%s), %s peak lr "
                    "%.3g, lr scale %.3g..1, %s loss, %s on %s", config.arch, config.input_size, self.num_classes,
                    config.recipe, self.iters, config.global_batch, config.global_batch // env.world_size,
                    f", micro-batches of {config.micro_batch}" if config.micro_batch else "", config.optimizer,
                    config.peak_lr, min(scales), config.loss_name, self.precision.name, env.device)
        self.precision.log(logger)


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


def _changed_keys(config: FinetuneConfig, init: str, state: dict[str, Any]) -> list[str]:
    """What forbids resuming ``state``: changed recipe keys, or another init."""
    return config.changed_keys(state["config"]) + (["init"] if state["init"] != init else [])
