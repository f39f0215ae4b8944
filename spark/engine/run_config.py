"""What every training run's section shares: the batch and its lr scaling, the schedule length, how it executes,
and which keys a resumed run may change."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from spark.config import ConfigError, Section, changed_keys, require

from .compilation import CompileSetting
from .distributed import DEFAULT_TIMEOUT_MINUTES
from .precision import PrecisionName


@dataclass(kw_only=True)
class TrainingConfig(Section):
    """``lr = base_lr * global_batch / 256``; ``global_batch`` is split across ranks and, when ``micro_batch`` is
    set, accumulated over micro-batches of at most that many images per device (``auto``: the most that fit). A
    stage's section derives from this (and gives the recipe keys their defaults, or takes them from a recipe)."""

    # Keys that may change when a run is resumed: they affect speed or bookkeeping, not the trained weights.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"num_workers", "compile", "micro_batch", "save_every",
                                                     "dist_timeout_minutes", "stop_margin_s"})

    epochs: int
    warmup_epochs: int
    global_batch: int
    base_lr: float
    weight_decay: float
    clip: float  # max gradient norm; 0 disables clipping

    micro_batch: int | Literal["auto"] | None = None  # auto: the largest that fits (spark.engine.micro_batch)
    num_workers: int = 8
    precision: PrecisionName = "auto"  # bf16 where the device has it natively, else fp32
    channels_last: bool = False
    compile: CompileSetting = "auto"  # torch.compile; auto: runs long enough to pay (spark.engine.compilation)
    save_every: int = 1  # epochs between checkpoints (the last epoch is always saved)
    dist_timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES  # a collective's wait for the slowest rank (DDP)
    stop_margin_s: float = 300  # under a job time limit: stop at the last epoch boundary this long before it
    seed: int = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(0 <= self.warmup_epochs < self.epochs, "warmup_epochs",
                f"must be in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        require(self.global_batch >= 1, "global_batch", f"must be >= 1, got {self.global_batch}")
        require(self.base_lr > 0, "base_lr", f"must be > 0, got {self.base_lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.clip >= 0, "clip", f"must be >= 0, got {self.clip}")
        require(self.micro_batch in (None, "auto") or self.micro_batch >= 1, "micro_batch",
                f"must be >= 1 or auto, got {self.micro_batch}")
        require(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        require(self.save_every >= 1, "save_every", f"must be >= 1, got {self.save_every}")
        require(self.dist_timeout_minutes > 0, "dist_timeout_minutes", f"must be > 0, got {self.dist_timeout_minutes}")
        require(self.stop_margin_s >= 0, "stop_margin_s", f"must be >= 0, got {self.stop_margin_s}")

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
