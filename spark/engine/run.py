"""The run every training stage shares: its config, one resumable run directory trained epoch by epoch, the same
code on a laptop and under torchrun, stopping at an epoch boundary before a job's time limit.

:func:`run_training` starts the process group, builds the stage's :class:`EpochTrainer`, records provenance
(``run.json``) and fits. The trainer owns what every stage does alike (the resume policy, placement, precision, DDP
and compile, the epoch's steps, checkpoints, logs and metrics); a stage subclass supplies its model, data and loss.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal, Mapping

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from spark.config import Above, AtLeast, ConfigError, Section, changed_keys, check_fields, require, to_dict
from spark.errors import RunError
from spark.io import write_json, write_text
from spark.provenance import recorded_run

from .data import derive_seed, seed_all, set_deterministic, set_epoch
from .distributed import DEFAULT_TIMEOUT_MINUTES, DistEnv, all_reduce_sum, barrier, distributed_env, unwrap, wrap_ddp
from .precision import Compilation, CompileSetting, Precision, PrecisionName
from .records import (
    CHECKPOINT_NAME, METRICS_NAME, MetricsLog, checkpoint_due, epoch_bar, load_state, log_to_file, save_state,
)
from .step import apply_lr_wd, probe_micro_batch, train_step, warmup_cosine

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
LOG_NAME = "train.log"
STALE_CHECKPOINT_NAME = "checkpoint.stale.pth"
RESUBMIT = 75  # EX_TEMPFAIL: the job stopped early on purpose; running it again continues the run


@dataclass(kw_only=True)
class TrainingConfig(Section):
    """``lr = base_lr * global_batch / 256``; ``global_batch`` is split across ranks and, when ``micro_batch`` is
    set, accumulated over micro-batches of at most that many images per device (``auto``: the most that fit). A
    stage's section derives from this (and gives the recipe keys their defaults, or takes them from a recipe)."""

    # Keys that may change when a run is resumed: they affect speed or bookkeeping, not the trained weights.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"num_workers", "compile", "micro_batch", "save_every",
                                                     "dist_timeout_minutes", "stop_margin_s"})

    epochs: Annotated[int, AtLeast(1)]
    warmup_epochs: Annotated[int, AtLeast(0)]
    global_batch: Annotated[int, AtLeast(1)]
    base_lr: Annotated[float, Above(0)]
    weight_decay: Annotated[float, AtLeast(0)]
    clip: Annotated[float, AtLeast(0)]  # max gradient norm; 0 disables clipping

    micro_batch: int | Literal["auto"] | None = None  # auto: the largest that fits (spark.engine.step)
    num_workers: Annotated[int, AtLeast(0)] = 8
    precision: PrecisionName = "auto"  # bf16 where the device has it natively, else fp32
    channels_last: bool = False
    compile: CompileSetting = "auto"  # torch.compile; auto: runs long enough to pay (spark.engine.precision)
    save_every: Annotated[int, AtLeast(1)] = 1  # epochs between checkpoints (the last epoch is always saved)
    dist_timeout_minutes: Annotated[float, Above(0)] = DEFAULT_TIMEOUT_MINUTES  # a collective's wait for any rank
    stop_margin_s: Annotated[float, AtLeast(0)] = 300  # stop at an epoch boundary this long before a job's time limit
    seed: int = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        check_fields(self)
        self.check_schedule()

    def check_schedule(self) -> None:
        """The rules that relate its fields (a section that checks its fields through another base calls this)."""
        require(self.warmup_epochs < self.epochs, "warmup_epochs",
                f"must be in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        require(self.micro_batch in (None, "auto") or self.micro_batch >= 1, "micro_batch",
                f"must be >= 1 or auto, got {self.micro_batch}")

    @property
    def peak_lr(self) -> float:
        return self.base_lr * self.global_batch / 256

    def check_world_size(self, world_size: int) -> None:
        """The batch must split evenly over the ranks (checked once the job's size is known)."""
        if self.global_batch % world_size:
            raise ConfigError(f"params: {self.SECTION}.global_batch: {self.global_batch} does not split evenly over "
                              f"{world_size} processes")

    def changed_keys(self, recorded: dict[str, Any]) -> list[str]:
        """Keys whose value differs from the config a checkpoint ``recorded``, except :attr:`RESUMABLE` ones."""
        return changed_keys(self, dict(recorded), self.RESUMABLE)


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
        write_json(self.run_dir / METRICS_NAME, self.summary())

    def summary(self) -> dict[str, Any]:
        """``metrics.json``: the last epoch's record (a stage may add to it)."""
        return {"epoch": len(self.history), **self.history[-1]}

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
        logger.warning("%s was written with different values of %s: starting over (%s)", written, ", ".join(changed),
                       kept)
    return False


class TimeLimitReached(RunError):
    """The run stopped after a checkpointed epoch, before its job's time limit; rerun the command to continue."""

    exit_code = RESUBMIT


def slurm_end_time(environ: Mapping[str, str] = os.environ) -> float | None:
    """When SLURM ends this job (seconds since the epoch), or None outside SLURM and for jobs without a limit:
    ``SLURM_JOB_END_TIME`` where SLURM sets it, else the end time ``squeue`` reports for ``SLURM_JOB_ID`` (which
    follows ``scontrol update TimeLimit``)."""
    if environ.get("SLURM_JOB_END_TIME", "").isdigit():
        return float(environ["SLURM_JOB_END_TIME"])
    job = environ.get("SLURM_JOB_ID")
    if not job or not shutil.which("squeue"):
        return None
    try:
        end = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True,
                             timeout=60).stdout.strip()
        return datetime.fromisoformat(end).timestamp()
    except (OSError, subprocess.SubprocessError, ValueError):  # "N/A", "Unknown", "NONE": no limit known
        return None


@dataclass
class TimeLimit:
    """Whether another epoch fits before ``end`` (seconds since the epoch; None: no limit).

    Clusters cap a job's wall time far below a paper run's. Before each epoch the trainer asks whether the epoch
    still ends ``margin_s`` before the limit; if not, it checkpoints and stops with :class:`TimeLimitReached`, the
    workflow resubmits the job, and the next job resumes after the last completed epoch, so nothing is computed
    twice."""

    end: float | None
    margin_s: float
    clock: Callable[[], float] = time.time
    epoch_seconds: list[float] = field(default_factory=list)  # this job's epochs, checkpoint and logging included
    _started: float | None = None

    def start_epoch(self) -> None:
        self._started = self.clock()

    def end_epoch(self) -> None:
        self.epoch_seconds.append(self.clock() - self._started)

    def left(self) -> float:
        return self.end - self.clock() - self.margin_s

    def allows_epoch(self, recorded_seconds: float | None = None) -> bool:
        """Whether the next epoch ends ``margin_s`` before the limit, at this job's slowest epoch's pace (before
        the first: ``recorded_seconds``, the run's recorded pace; unknown: yes)."""
        if self.end is None:
            return True
        pace = max(self.epoch_seconds, default=recorded_seconds)
        return pace is None or pace <= self.left()

    def describe(self) -> str:
        if self.end is None:
            return "no job time limit"
        end = datetime.fromtimestamp(self.end)
        return f"the job ends at {end:%Y-%m-%d %H:%M:%S}, stopping {self.margin_s:.0f} s before it at an epoch boundary"
