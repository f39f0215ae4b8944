"""The pretraining run: one run directory, resumable, the same code on a laptop and under torchrun.

``RUN_DIR`` receives ``checkpoint.pth`` (full state for resume), ``encoder.pth`` (plain timm naming),
``metrics.json``, ``dvclive/`` (per-epoch history), ``reconstruction.png``, ``config.yaml``, ``train.log`` and
``run.json`` (commit, params hash, hardware, wall time).
The results (``encoder.pth``, ``metrics.json``, ``reconstruction.png``) appear once the last epoch is done; until
then, running the same command again continues after the last checkpoint.
"""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from spark import convert_sync_batchnorm, load_checkpoint
from spark.config import ConfigError, to_dict
from spark.engine import (
    Compilation, DistEnv, EpochTrainer, Precision, all_reduce_sum, apply_lr_wd, cosine, derive_seed,
    distributed_env, epoch_bar, resume_state, save_state, seed_all, set_deterministic, set_epoch, train_loader,
    train_step, unwrap, warmup_cosine, wrap_ddp,
)
from spark.io import save_torch
from spark.model import SparK
from spark.provenance import recorded_run

from .config import PretrainConfig, build_model
from .data import ImageFiles, collate_images, list_images, load_images, spread, train_transform
from .optim import build_optimizer
from .visualize import write_reconstruction

logger = logging.getLogger("spark.pretrain")

ENCODER_NAME = "encoder.pth"
RECONSTRUCTION_NAME = "reconstruction.png"


def pretrain(config: PretrainConfig, run_dir: str | Path, init_from: str | Path | None = None,
             restart_on_change: bool = False) -> SparK:
    """Pretrain into ``run_dir`` (resuming it if it holds a checkpoint) in this process's torchrun group.

    Returns the trained model, unwrapped, on this rank's device. ``init_from`` (weights only, any layout
    :func:`spark.load_checkpoint` reads) applies to a fresh run, not to a resumed one. A checkpoint from another
    recipe is an error, or with ``restart_on_change`` set aside (see :func:`spark.engine.resume_state`).
    """
    with distributed_env() as env:
        config.check_world_size(env.world_size)
        trainer = Pretrainer(config, Path(run_dir), env, init_from, restart_on_change)
        provenance = recorded_run(run_dir, "pretrain", to_dict(config), config.seed) if env.is_main else nullcontext({})
        with provenance as info:
            info.update(init=str(init_from) if init_from else None, resumed=trainer.start_epoch > 0,
                        precision=trainer.precision.describe(), compile=trainer.compilation.describe())
            return trainer.fit()


class Pretrainer(EpochTrainer):
    """Builds the run (model, optimizer, data, resume state) and trains it epoch by epoch."""

    logger = logger

    def __init__(self, config: PretrainConfig, run_dir: Path, env: DistEnv, init_from: str | Path | None,
                 restart_on_change: bool = False) -> None:
        self.config, self.run_dir, self.env = config, run_dir, env
        set_deterministic(config.deterministic)
        state = resume_state(run_dir, env, lambda s: config.changed_keys(s["config"]), restart_on_change)
        paths = list_images(config.data)
        self.iters = len(paths) // config.global_batch
        if self.iters == 0:
            raise ConfigError(f"params: pretrain.global_batch: {config.global_batch} exceeds the {len(paths)} "
                              f"images of {config.data}")
        self.vis_paths = spread(list_images(config.vis_data, "pretrain.vis_data") if config.vis_data else paths,
                                config.vis_images)

        seed_all(config.seed)  # the same initial weights on every rank and in every run
        model = build_model(config)
        if state is not None:
            model.load_state_dict(state["model"])
        elif init_from is not None:
            report = load_checkpoint(model, init_from)
            logger.info("initialised from %s (%s layout; %d keys left as initialised)", init_from, report.layout,
                        len(report.missing))
        self.precision = Precision.resolve(config.precision, config.channels_last, env.device)
        model = self.precision.prepare_model(model.to(env.device))
        if env.is_distributed:  # the masked BNs sync over gloo too; torch's SyncBatchNorm (decoder) needs CUDA
            model = convert_sync_batchnorm(model, dense=env.device.type == "cuda")
        self.model: SparK = model
        self.optimizer = build_optimizer(model, config)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = state["epoch"] if state is not None else 0
        self.compilation = Compilation.resolve(config.compile, (config.epochs - self.start_epoch) * self.iters,
                                               env.device, self.precision.name)
        self.step_model = self.compilation.apply(wrap_ddp(model, env))
        self.history: list[dict[str, float]] = state["history"] if state is not None else []
        self.loader = train_loader(ImageFiles(paths, train_transform(config.input_size), config.skip_bad_images),
                                   batch_size=config.global_batch // env.world_size, env=env, seed=config.seed,
                                   num_workers=config.num_workers, collate_fn=collate_images)

    def config_record(self) -> dict[str, Any]:
        return to_dict(self.config)

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the data; returns the epoch's metrics (averaged over iterations and ranks)."""
        config, env = self.config, self.env
        seed_all(derive_seed(config.seed, epoch, env.rank))
        set_epoch(self.loader, epoch)
        self.model.train()
        total_iters, warmup_iters = config.epochs * self.iters, config.warmup_epochs * self.iters
        loss_sum = grad_norm_sum = 0.0
        counts = torch.zeros(2, dtype=torch.long)  # images trained on, images skipped (this rank)
        bar = epoch_bar(epoch, config.epochs, self.iters * config.global_batch, enabled=env.is_main)
        start = time.perf_counter()
        for it, (images, skipped) in enumerate(self.loader):
            step = (epoch - 1) * self.iters + it
            lr = warmup_cosine(step, config.peak_lr, warmup_iters, total_iters)
            wd = cosine(step, total_iters, config.weight_decay, config.weight_decay_end)
            apply_lr_wd(self.optimizer, lr, wd)
            where = f"epoch {epoch}/{config.epochs}, iteration {it + 1}/{self.iters}"
            result = train_step(self.step_model, self.optimizer, self.precision.prepare_input(images, env.device),
                                self.loss, where=where, micro_batch=config.micro_batch,
                                clip=config.clip or None, precision=self.precision)
            loss_sum += result.loss
            grad_norm_sum += result.grad_norm
            counts += torch.tensor([len(images), skipped])
            bar.update(len(images) * env.world_size)
            bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.3g}", refresh=False)
        bar.close()
        images_done, skipped_total = all_reduce_sum(counts.to(env.device)).tolist()
        record = {
            "loss": loss_sum / self.iters,
            "lr": lr,
            "weight_decay": wd,
            "grad_norm": grad_norm_sum / self.iters,
            "img_per_s": images_done / (time.perf_counter() - start),
        }
        if config.skip_bad_images:
            record["bad_images"] = skipped_total
        return record

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """The SparK loss of a batch under a fresh random mask, drawn outside the (possibly compiled) model: the
        compiled graph takes it as an input, so it compiles once and draws the same masks as the eager model."""
        return self.step_model(images, self.model.mask(len(images), images.device))

    def save(self, epoch: int) -> None:
        """Checkpoint after ``epoch`` (rank 0)."""
        save_state(self.run_dir, {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "config": self.config_record(),
            "history": self.history,
        })

    def finish(self) -> None:
        """The results: ``metrics.json``, the encoder in timm naming and the reconstruction figure."""
        model = unwrap(self.model)
        save_torch(model.encoder_state_dict(), self.run_dir / ENCODER_NAME)
        if self.vis_paths:
            images = load_images(self.vis_paths, self.config.input_size).to(self.env.device)
            write_reconstruction(model, images, self.run_dir / RECONSTRUCTION_NAME, seed=self.config.seed)
        super().finish()

    def log_start(self) -> None:
        config, env = self.config, self.env
        if self.start_epoch:
            logger.info("resuming %s after epoch %d/%d", self.run_dir, self.start_epoch, config.epochs)
        logger.info("%s %dpx on %d image(s): %d iterations/epoch of %d images (%d per rank%s), peak lr %.3g, %s on %s",
                    config.arch, config.input_size, len(self.loader.dataset), self.iters, config.global_batch,
                    config.global_batch // env.world_size,
                    f", micro-batches of {config.micro_batch}" if config.micro_batch else "", config.peak_lr,
                    self.precision.name, env.device)
        self.precision.log(logger)
        self.compilation.log(logger)
