"""Start a stage's entry point as its ``resources`` section asks, so Snakemake and DVC run identical commands.

    python -m eval.launch pretrain spark.pretrain --params params.yaml --out RUN_DIR ...

With ``resources.<stage>.gpus`` > 1, pretraining and fine-tuning run under torchrun (one process per GPU) and
detection gets ``--num-gpus`` (Detectron2 launches its own workers); otherwise the module runs in this process.
Each process gets ``threads / max(gpus, 1)`` torch threads.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from spark.config import ConfigError, load_params, parse_section, require

STAGES = ("prepare", "pretrain", "finetune", "detection", "tables")


@dataclass(frozen=True)
class StageResources:
    """What one job of a stage asks the scheduler for. ``gpus > 1`` launches the stage under torchrun
    (Detectron2: its own launcher) with one process per GPU."""

    gpus: int = 0
    threads: int = 1
    mem_mb: int = 4000
    runtime: int = 60  # minutes

    def __post_init__(self) -> None:
        for key in ("gpus", "threads", "mem_mb", "runtime"):
            require(getattr(self, key) >= (0 if key == "gpus" else 1), key, f"out of range: {getattr(self, key)}")


def stage_resources(params: dict[str, Any], stage: str) -> StageResources:
    section = {"resources": (params.get("resources") or {}).get(stage) or {}}
    try:
        return parse_section(section, "resources", StageResources)
    except ConfigError as err:
        raise ConfigError(str(err).replace("params: resources.", f"params: resources.{stage}.", 1)) from None


def command(stage: str, module: str, args: Sequence[str], params: dict) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment that run ``python -m module args`` for ``stage``."""
    resources = stage_resources(params, stage)
    threads = max(resources.threads // max(resources.gpus, 1), 1)
    env = {"OMP_NUM_THREADS": str(threads)}
    if resources.gpus > 1 and stage == "detection":
        return [sys.executable, "-m", module, *args, "--num-gpus", str(resources.gpus)], env
    if resources.gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(resources.gpus), "-m", module, *args], env
    return [sys.executable, "-m", module, *args], env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("module", help="the entry point, e.g. spark.pretrain")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments (--params is read here too)")
    args = parser.parse_args(argv)
    params_file = _params_parser().parse_known_args(args.args)[0].params
    try:
        argv_, env = command(args.stage, args.module, args.args, load_params(params_file))
    except ConfigError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    os.execvpe(argv_[0], argv_, {**os.environ, **env})  # the stage's exit status becomes ours


def _params_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--params", default="params.yaml")
    return parser


if __name__ == "__main__":
    sys.exit(main())
