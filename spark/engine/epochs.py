"""The run every training stage shares: one resumable run directory, trained epoch by epoch, the same code on a
laptop and under torchrun.

:func:`run_training` starts the process group, builds the stage's :class:`EpochTrainer`, records provenance
(``run.json``) and fits. The trainer owns what every stage does alike: the resume policy, device placement,
precision, DDP and ``torch.compile``, the epoch's optimizer steps under the warmup-cosine lr, checkpoints, logs
and metrics. A stage subclass supplies only its own parts: model, data, loss, and what it records.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from spark.config import ConfigError, to_dict
from spark.io import write_json, write_text
from spark.provenance import recorded_run

from .compilation import Compilation
from .data import set_epoch
from .distributed import DistEnv, all_reduce_sum, barrier, distributed_env, unwrap, wrap_ddp
from .logs import log_to_file
from .loop import train_step
from .metrics import METRICS_NAME, MetricsLog
from .micro_batch import probe_micro_batch
from .precision import Precision
from .progress import epoch_bar
from .rng import derive_seed, seed_all, set_deterministic
from .run_config import TrainingConfig
from .run_state import CHECKPOINT_NAME, checkpoint_due, load_state, save_state
from .schedule import apply_lr_wd, warmup_cosine
from .time_limit import TimeLimit, TimeLimitReached, slurm_end_time

CONFIG_NAME = "config.yaml"
LOG_NAME = "train.log"
STALE_CHECKPOINT_NAME = "checkpoint.stale.pth"


def run_training(stage: str, config: TrainingConfig, build: Callable[[DistEnv], EpochTrainer]) -> nn.Module:
    """Fit ``build(env)`` in this process's torchrun group (or alone) and write ``run.json`` on rank 0.

    Returns the trained model, unwrapped, on this rank's device."""
    with distributed_env(config.dist_timeout_minutes) as env:
        config.check_world_size(env.world_size)
        trainer = build(env)
        main = env.is_main
        with recorded_run(trainer.run_dir, stage, to_dict(config), config.seed) if main else nullcontext({}) as info:
            info.update(trainer.run_info())
            return trainer.fit()


class EpochTrainer:
    """Base of the pretraining and fine-tuning runs.

    A subclass sets what its :meth:`changed_keys` reads, calls ``super().__init__`` (resume state in
    ``self.state``), then builds its data (setting ``loader`` and ``iters`` through :meth:`iterations`), its model
    through :meth:`place`, its optimizer and :meth:`wrap`, and implements :meth:`batch_inputs`,
    :meth:`model_loss`, :meth:`example_inputs` and :meth:`describe`.

    A run's results (``metrics.json`` and whatever :meth:`finish` adds) are written only once its last epoch is
    done: a workflow that declares them as outputs never sees them half-made, and a killed run leaves only its
    checkpoint, which the same command resumes."""

    logger: logging.Logger
    config: TrainingConfig
    model: nn.Module
    step_model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    iters: int
    micro_batch: int | None  # samples per forward/backward pass on this device (None: the rank's whole batch)
    # What the epoch's record adds to loss, lr, gradient norm and throughput: the weight decay (when scheduled),
    # the unreadable images skipped ("bad_images", when the run skips them).
    records_weight_decay = False
    records_skipped = False

    def __init__(self, config: TrainingConfig, run_dir: Path, env: DistEnv, restart_on_change: bool) -> None:
        self.config, self.run_dir, self.env = config, Path(run_dir), env
        set_deterministic(config.deterministic)
        self.state = resume_state(self.run_dir, env, self.changed_keys, restart_on_change)
        self.start_epoch = self.state["epoch"] if self.state is not None else 0
        self.history: list[dict[str, float]] = self.state["history"] if self.state is not None else []
        self.precision = Precision.resolve(config.precision, config.channels_last, env.device)
        self.time_limit = TimeLimit(slurm_end_time() if env.is_main else None, config.stop_margin_s)

    # What a stage supplies.

    def batch_inputs(self, batch: Any) -> tuple[Any, int, int]:
        """``(inputs of train_step, images in the batch, images skipped)`` for one loader batch."""
        raise NotImplementedError

    def model_loss(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        """The mean loss of a (micro-)batch of inputs through ``model`` (plain, compiled or under DDP)."""
        raise NotImplementedError

    def example_inputs(self, size: int) -> Any:
        """Inputs of ``size`` samples on the device, shaped like a training batch's (``micro_batch: auto``
        probes memory with them)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One log line: what the run trains on what."""
        raise NotImplementedError

    def changed_keys(self, state: dict[str, Any]) -> list[str]:
        """What forbids resuming from ``state``: recipe keys that changed (a subclass may add its own)."""
        return self.config.changed_keys(state["config"])

    def weight_decay_at(self, step: int, total_steps: int) -> float:
        return self.config.weight_decay

    def after_step(self, step: int) -> None:
        """Called after each optimizer step (e.g. an EMA update)."""

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """Train (and evaluate) one epoch, on every rank; returns the epoch's metrics."""
        return self.train_epoch(epoch)

    def extra_state(self) -> dict[str, Any]:
        """What a stage adds to its checkpoint besides model, optimizer, epoch, config and history."""
        return {}

    def run_info(self) -> dict[str, Any]:
        """What ``run.json`` records about this run besides provenance."""
        return {"resumed": self.start_epoch > 0, "precision": self.precision.describe(),
                "compile": self.compilation.describe(), "micro_batch": self.micro_batch,
                "world_size": self.env.world_size,
                "dist_timeout_minutes": self.config.dist_timeout_minutes}

    def finish(self) -> None:
        """Rank 0, once the last epoch is done (or was already done): write the run's results."""
        write_json(self.run_dir / METRICS_NAME, {"epoch": len(self.history), **self.history[-1]})

    # Building blocks for the subclass's constructor.

    def iterations(self, count: int, what: str) -> int:
        """Optimizer steps per epoch over ``count`` samples (dropping the last partial batch); at least one."""
        iters = count // self.config.global_batch
        if iters == 0:
            raise ConfigError(f"params: {self.config.SECTION}.global_batch: {self.config.global_batch} exceeds the "
                              f"{count} {what}")
        return iters

    def place(self, model: nn.Module) -> nn.Module:
        """``model`` on this rank's device, in the run's memory format, and the run's micro-batch: the configured
        one, or with ``auto`` the most that fit (probed here, before the model synchronises anything)."""
        model = self.precision.prepare_model(model.to(self.env.device))
        self.micro_batch = self.config.micro_batch
        if self.micro_batch == "auto":
            self.micro_batch = probe_micro_batch(model, self.example_pass,
                                                 self.config.global_batch // self.env.world_size, self.env.device)
        return model

    def example_pass(self, model: nn.Module, size: int) -> None:
        """A training forward and backward pass of ``size`` example samples through ``model``."""
        with self.precision.autocast(self.env.device):
            loss = self.model_loss(model, self.example_inputs(size))
        loss.backward()

    def loss(self, inputs: Any) -> torch.Tensor:
        return self.model_loss(self.step_model, inputs)

    def wrap(self, model: nn.Module) -> None:
        """Set ``model`` as the run's model and ``step_model``: it under DDP, compiled if the run asks for it."""
        config = self.config
        self.model = model
        self.compilation = Compilation.resolve(config.compile, (config.epochs - self.start_epoch) * self.iters,
                                               self.env.device, self.precision.name)
        self.step_model = self.compilation.apply(wrap_ddp(model, self.env))

    # The run.

    def fit(self) -> nn.Module:
        """Train the remaining epochs; after each, rank 0 checkpoints (when due) and logs the epoch's record."""
        config, env = self.config, self.env
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / CONFIG_NAME, yaml.safe_dump(to_dict(config), sort_keys=False))
        with log_to_file(self.logger, self.run_dir / LOG_NAME) if env.is_main else nullcontext():
            self.log_start()
            metrics = MetricsLog(self.run_dir, config.epochs, self.logger, self.history) if env.is_main else None
            try:
                for epoch in range(self.start_epoch + 1, config.epochs + 1):
                    if not self.epoch_fits_in_job():
                        self.stop_before_time_limit(epoch - 1)
                    self.time_limit.start_epoch()
                    record = self.run_epoch(epoch)
                    self.history.append(record)
                    if metrics is not None:
                        if checkpoint_due(epoch, config.epochs, config.save_every):
                            self.save(epoch)
                        metrics.log(epoch, record)
                    self.time_limit.end_epoch()
            finally:
                if metrics is not None:
                    metrics.close()
            if env.is_main and self.history:
                self.finish()
        return self.model

    def epoch_fits_in_job(self) -> bool:
        """Whether the next epoch ends before the job's time limit (rank 0 decides for every rank)."""
        recorded = self.history[-1].get("img_per_s") if self.history else None
        pace = self.iters * self.config.global_batch / recorded if recorded else None
        stop = torch.tensor([0 if not self.env.is_main or self.time_limit.allows_epoch(pace) else 1])
        return all_reduce_sum(stop.to(self.env.device)).item() == 0

    def stop_before_time_limit(self, done: int) -> None:
        """Checkpoint epoch ``done`` (if not yet: rank 0, while the others wait) and stop the job with
        :class:`TimeLimitReached` on every rank. Only rank 0 knows the limit, so only its message has numbers."""
        config, limit = self.config, self.time_limit
        left = f"{limit.left():.0f} s left" if self.env.is_main else "rank 0 found too little time left"
        if done == self.start_epoch:
            raise ConfigError(f"params: resources.{config.SECTION}.runtime: an epoch does not fit in this job "
                              f"({left} before its time limit, less the stop margin); give the job more time")
        if self.env.is_main and not checkpoint_due(done, config.epochs, config.save_every):
            self.save(done)
        barrier()  # no rank leaves (and so no launcher ends the job) before the checkpoint is written
        raise TimeLimitReached(f"stopped after epoch {done}/{config.epochs}, checkpointed, before the job's time "
                               f"limit ({left}, an epoch takes ~{max(limit.epoch_seconds, default=0):.0f} s); "
                               "run the same command again (Snakemake resubmits the job) to continue")

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training data: warmup-cosine lr per step, one :func:`train_step` per batch. Returns
        the epoch's training metrics (loss and gradient norm averaged over steps, images counted over ranks)."""
        config, env = self.config, self.env
        seed_all(derive_seed(config.seed, epoch, env.rank))  # augmentation and drop-path draws, reproducible on resume
        set_epoch(self.loader, epoch)
        self.model.train()
        total_steps, warmup_steps = config.epochs * self.iters, config.warmup_epochs * self.iters
        loss_sum = grad_norm_sum = 0.0
        counts = torch.zeros(2, dtype=torch.long)  # images trained on, images skipped (this rank)
        bar = epoch_bar(epoch, config.epochs, self.iters * config.global_batch, enabled=env.is_main)
        start = time.perf_counter()
        for it, batch in enumerate(self.loader):
            step = (epoch - 1) * self.iters + it
            lr = warmup_cosine(step, config.peak_lr, warmup_steps, total_steps)
            wd = self.weight_decay_at(step, total_steps)
            apply_lr_wd(self.optimizer, lr, wd)
            inputs, images, skipped = self.batch_inputs(batch)
            result = train_step(self.loss, self.optimizer, inputs, module=self.step_model,
                                where=f"epoch {epoch}/{config.epochs}, iteration {it + 1}/{self.iters}",
                                micro_batch=self.micro_batch, clip=config.clip or None, precision=self.precision)
            self.after_step(step)
            loss_sum += result.loss
            grad_norm_sum += result.grad_norm
            counts += torch.tensor([images, skipped])
            bar.update(images * env.world_size)
            bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.3g}", refresh=False)
        bar.close()
        images_done, skipped = all_reduce_sum(counts.to(env.device)).tolist()
        record = {
            "loss": loss_sum / self.iters,
            "lr": lr,
            **({"weight_decay": wd} if self.records_weight_decay else {}),
            "grad_norm": grad_norm_sum / self.iters,
            "img_per_s": images_done / (time.perf_counter() - start),
        }
        if self.records_skipped:
            record["bad_images"] = skipped
        return record

    def save(self, epoch: int) -> None:
        """Checkpoint after ``epoch`` (rank 0)."""
        save_state(self.run_dir, {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "config": to_dict(self.config),
            "history": self.history,
            **self.extra_state(),
        })

    def log_start(self) -> None:
        config, env = self.config, self.env
        if self.start_epoch:
            self.logger.info("resuming %s after epoch %d/%d", self.run_dir, self.start_epoch, config.epochs)
        micro = f", micro-batches of {self.micro_batch}" if self.micro_batch else ""
        micro += " (auto)" if config.micro_batch == "auto" else ""
        self.logger.info("%s: %d iterations/epoch of %d images (%d per rank%s), peak lr %.3g, %s on %s",
                         self.describe(), self.iters, config.global_batch, config.global_batch // env.world_size,
                         micro, config.peak_lr, self.precision.name, env.device)
        self.precision.log(self.logger)
        self.compilation.log(self.logger)
        if self.time_limit.end is not None:
            self.logger.info("time limit: %s", self.time_limit.describe())


def resume_state(run_dir: Path, env: DistEnv, changed_keys: Callable[[dict[str, Any]], list[str]],
                 restart_on_change: bool = False) -> dict[str, Any] | None:
    """The checkpoint to resume ``run_dir`` from, or None for a fresh run (see :func:`check_resumable`); a
    checkpoint set aside is kept as ``checkpoint.stale.pth``."""
    state = load_state(run_dir)
    if state is None:
        return None
    path = run_dir / CHECKPOINT_NAME

    def set_aside() -> None:
        if env.is_main:
            os.replace(path, run_dir / STALE_CHECKPOINT_NAME)

    resume = check_resumable(path, changed_keys(state), restart_on_change, set_aside,
                             f"the old checkpoint is kept as {STALE_CHECKPOINT_NAME}", log=env.is_main)
    return state if resume else None


def check_resumable(written: Path, changed: list[str], restart_on_change: bool, set_aside: Callable[[], None],
                    kept: str, log: bool = True) -> bool:
    """The resume policy of every stage: whether to resume from the checkpoint(s) ``written``, whose recipe's
    ``changed`` keys now differ. None changed: resume. Otherwise an error, or with ``restart_on_change`` (what the
    workflows ask for: a changed parameter means recompute) ``set_aside()`` moves the old checkpoint out of the way
    (``kept`` says where, in the warning ``log`` enables) and the run starts over."""
    if not changed:
        return True
    if not restart_on_change:
        raise ConfigError(f"{written} was written with different values of {', '.join(changed)}; restore them, "
                          "use a new run directory, or pass --restart-on-change")
    set_aside()
    if log:
        logging.getLogger(__name__).warning("%s was written with different values of %s: starting over (%s)",
                                            written, ", ".join(changed), kept)
    return False
