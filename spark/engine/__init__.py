"""Training machinery shared by pretraining and fine-tuning; nothing here knows about SparK. Exports what the stages
and tools use; the rest is imported from its module: run, step, precision, distributed, data or records."""
from .data import eval_loader, seed_all, set_deterministic, set_epoch, train_loader
from .distributed import DistEnv, all_reduce_mean, all_reduce_sum, require_gpus, retain_freed_memory, unwrap
from .precision import AUTO_MIN_STEPS, Compilation, CompileSetting, Precision
from .records import ENCODER_NAME, METRICS_NAME
from .run import EpochTrainer, TrainingConfig, check_resumable, run_training
from .step import cosine, train_step

__all__ = [
    "AUTO_MIN_STEPS",
    "Compilation",
    "CompileSetting",
    "DistEnv",
    "EpochTrainer",
    "ENCODER_NAME",
    "METRICS_NAME",
    "Precision",
    "TrainingConfig",
    "all_reduce_mean",
    "all_reduce_sum",
    "check_resumable",
    "cosine",
    "eval_loader",
    "require_gpus",
    "retain_freed_memory",
    "run_training",
    "seed_all",
    "set_deterministic",
    "set_epoch",
    "train_loader",
    "train_step",
    "unwrap",
]
