"""Training machinery shared by pretraining and fine-tuning: the run (config, resume policy, epochs), processes,
host memory, precision, compilation, schedules, data order, one optimizer step, checkpoints, progress and metrics.
Nothing here knows about SparK."""
from .run_state import CHECKPOINT_NAME, checkpoint_due, load_state, save_state
from .compilation import AUTO_MIN_STEPS, Compilation, CompileSetting
from .data import SeededDataset, SeededSampler, set_epoch, train_loader
from .distributed import (
    DistEnv, all_reduce_mean, all_reduce_sum, distributed_env, require_gpus, unwrap, wrap_ddp,
)
from .epochs import (
    CONFIG_NAME, LOG_NAME, STALE_CHECKPOINT_NAME, EpochTrainer, check_resumable, resume_state, run_training,
)
from .host_memory import retain_freed_memory
from .logs import LOG_FORMAT, log_to_file, setup_logging
from .loop import NonFiniteError, StepResult, train_step
from .metrics import DVCLIVE_DIR, METRICS_NAME, MetricsLog, format_record
from .precision import Precision, PrecisionName
from .progress import epoch_bar
from .rng import derive_seed, seed_all, seeded, set_deterministic
from .run_config import TrainingConfig
from .schedule import apply_lr_wd, cosine, warmup_cosine

__all__ = [
    "AUTO_MIN_STEPS",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "Compilation",
    "CompileSetting",
    "DVCLIVE_DIR",
    "DistEnv",
    "EpochTrainer",
    "LOG_FORMAT",
    "LOG_NAME",
    "METRICS_NAME",
    "MetricsLog",
    "NonFiniteError",
    "Precision",
    "PrecisionName",
    "STALE_CHECKPOINT_NAME",
    "SeededDataset",
    "SeededSampler",
    "StepResult",
    "TrainingConfig",
    "all_reduce_mean",
    "all_reduce_sum",
    "apply_lr_wd",
    "check_resumable",
    "checkpoint_due",
    "cosine",
    "derive_seed",
    "distributed_env",
    "epoch_bar",
    "format_record",
    "load_state",
    "log_to_file",
    "require_gpus",
    "resume_state",
    "retain_freed_memory",
    "run_training",
    "save_state",
    "seed_all",
    "seeded",
    "set_deterministic",
    "set_epoch",
    "setup_logging",
    "train_loader",
    "train_step",
    "unwrap",
    "warmup_cosine",
    "wrap_ddp",
]
