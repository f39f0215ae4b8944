"""The pretraining run (:func:`pretrain`): SparK on an image folder, in one resumable run directory.

``RUN_DIR`` receives ``checkpoint.pth`` (full state for resume), ``encoder.pth`` (plain timm naming),
``metrics.json``, ``dvclive/`` (per-epoch history, with ``knn_data`` the k-NN top-1 of :mod:`.knn`),
``reconstruction.png``, ``config.yaml``, ``train.log`` and ``run.json`` (commit, params hash, hardware, wall time).
The results (``encoder.pth``, ``metrics.json``, ``reconstruction.png``) appear once the last epoch is done; until
then, running the same command again continues after the last checkpoint.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from spark.engine import ENCODER_NAME, DistEnv, EpochTrainer, cosine, run_training, seed_all, train_loader, unwrap
from spark.images import spread
from spark.io import save_torch
from spark.model import SparK, build_spark
from spark.sparse import convert_sync_batchnorm
from spark.weights import load_checkpoint

from .config import PretrainConfig
from .data import ImageFiles, collate_images, list_images, load_images, normalize, train_transform
from .knn import KnnMonitor
from .optim import build_optimizer
from .visualize import write_reconstruction

logger = logging.getLogger("spark.pretrain")

RECONSTRUCTION_NAME = "reconstruction.png"


def pretrain(config: PretrainConfig, run_dir: str | Path, init_from: str | Path | None = None,
             restart_on_change: bool = False) -> SparK:
    """Pretrain into ``run_dir`` (resuming it if it holds a checkpoint) in this process's torchrun group.

    Returns the trained model, unwrapped, on this rank's device. ``init_from`` (weights only, any layout
    :func:`spark.weights.load_checkpoint` reads) applies to a fresh run, not to a resumed one. A checkpoint from
    another recipe is an error, or with ``restart_on_change`` set aside (see :func:`spark.engine.run.resume_state`).
    """
    return run_training("pretrain", config,
                        lambda env: Pretrainer(config, Path(run_dir), env, init_from, restart_on_change))


class Pretrainer(EpochTrainer):
    """SparK's parts of the run: the model (fresh, resumed or initialised from weights), LAMB, the images, the k-NN
    monitor."""

    logger = logger
    records_weight_decay = True  # cosine from weight_decay to weight_decay_end
    config: PretrainConfig
    model: SparK

    def __init__(self, config: PretrainConfig, run_dir: Path, env: DistEnv, init_from: str | Path | None,
                 restart_on_change: bool = False) -> None:
        super().__init__(config, run_dir, env, restart_on_change)
        self.init_from = init_from
        self.records_skipped = config.skip_bad_images
        paths = list_images(config.data)
        self.iters = self.iterations(len(paths), f"images of {config.data}")
        self.vis_paths = spread(list_images(config.vis_data, "pretrain.vis_data") if config.vis_data else paths,
                                config.vis_images)
        self.knn = KnnMonitor(config, env, self.precision) if config.knn_data else None
        # The initial weights' k-NN top-1: measured once, before the first epoch, and kept in the checkpoint.
        self.knn_init: float | None = self.state.get("knn_top1_init") if self.state is not None else None

        seed_all(config.seed)  # the same initial weights on every rank and in every run
        model = build_spark(config.model_config())
        if self.state is not None:
            model.load_state_dict(self.state["model"])
        elif init_from is not None:
            report = load_checkpoint(model, init_from)
            logger.info("initialised from %s (%s layout; %d keys left as initialised)", init_from, report.layout,
                        len(report.missing))
        model = self.place(model)
        if env.is_distributed:  # the masked BNs sync over gloo too; torch's SyncBatchNorm (decoder) needs CUDA
            model = convert_sync_batchnorm(model, dense=env.device.type == "cuda")
        self.optimizer = build_optimizer(model, config)
        if self.state is not None:
            self.optimizer.load_state_dict(self.state["optimizer"])
        self.wrap(model)
        self.loader = train_loader(ImageFiles(paths, train_transform(config.input_size), config.skip_bad_images),
                                   batch_size=config.global_batch // env.world_size, env=env, seed=config.seed,
                                   num_workers=config.num_workers, collate_fn=collate_images)

    def batch_inputs(self, batch: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, int, int]:
        images, skipped = batch
        return normalize(self.precision.prepare_input(images, self.env.device)), len(images), skipped

    def model_loss(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The SparK loss of a batch under a fresh random mask, drawn outside the (possibly compiled) model: the
        compiled graph takes it as an input, so it compiles once and draws the same masks as the eager model."""
        return model(images, unwrap(model).sample_visible(len(images), images.device))

    def example_inputs(self, size: int) -> torch.Tensor:
        size_px = self.config.input_size
        pixels = torch.randint(0, 256, (size, 3, size_px, size_px), dtype=torch.uint8)
        return normalize(self.precision.prepare_input(pixels, self.env.device))

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch; with the k-NN monitor, measure the encoder before the first epoch and after every
        ``knn_every``-th and the last one."""
        if self.knn is not None and self.knn_init is None:
            self.knn_init = self.knn.top1(unwrap(self.model))
            self.logger.info("k-NN top-1 before training: %.2f%%", self.knn_init)
        record = self.train_epoch(epoch)
        if self.knn is not None and (epoch % self.config.knn_every == 0 or epoch == self.config.epochs):
            record["knn_top1"] = self.knn.top1(unwrap(self.model))
        return record

    def extra_state(self) -> dict[str, Any]:
        return {"knn_top1_init": self.knn_init}

    def summary(self) -> dict[str, Any]:
        """The last epoch's record; with the k-NN monitor, also the initial weights' top-1 and the epochs
        measured."""
        if self.knn is None:
            return super().summary()
        epochs = [epoch for epoch, record in enumerate(self.history, start=1) if "knn_top1" in record]
        return {**super().summary(), "knn_top1_init": self.knn_init, "knn_epochs": epochs}

    def weight_decay_at(self, step: int, total_steps: int) -> float:
        return cosine(step, total_steps, self.config.weight_decay, self.config.weight_decay_end)

    def run_info(self) -> dict[str, Any]:
        return {"init": str(self.init_from) if self.init_from else None, **super().run_info()}

    def finish(self) -> None:
        """The results: ``metrics.json``, the encoder in timm naming and the reconstruction figure."""
        model = unwrap(self.model)
        save_torch(model.encoder_state_dict(), self.run_dir / ENCODER_NAME)
        if self.vis_paths:
            images = load_images(self.vis_paths, self.config.input_size).to(self.env.device)
            write_reconstruction(model, images, self.run_dir / RECONSTRUCTION_NAME, seed=self.config.seed)
        super().finish()

    def describe(self) -> str:
        knn = f"; {self.knn.describe()}" if self.knn is not None else ""
        return f"{self.config.arch} {self.config.input_size}px on {len(self.loader.dataset)} image(s){knn}"
