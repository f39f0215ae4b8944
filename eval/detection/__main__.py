"""``spark detect`` (``python -m eval.detection``): Mask R-CNN transfer from an encoder.

    spark detect --params params.yaml --init {scratch|encoder.pth} --out RUN_DIR [--model M] [key.path=value ...]
"""
from __future__ import annotations

import argparse
import sys

import torch

from eval.detection.config import DetectionConfig
from spark.config import apply_override, branch_section, load_params, parse_section
from spark.errors import run_command


def main(argv: list[str] | None = None, prog: str = "python -m eval.detection") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Fine-tune Mask R-CNN (Detectron2) from an encoder on COCO-format data; write box/mask AP.",
    )
    parser.add_argument("--params", default="params.yaml", help="params file with a `detection` section")
    parser.add_argument("--init", required=True,
                        help="'scratch' (random init), or encoder weights: our encoder.pth, the authors' .pth")
    parser.add_argument("--out", required=True, help="run directory; re-running with a checkpoint there resumes")
    parser.add_argument("--model", help="merge params['models'][MODEL]['detection'] over the detection section")
    parser.add_argument("--num-gpus", type=int, default=torch.cuda.device_count(),
                        help="DDP processes (one per GPU, SyncBN); 0 or 1 trains in this process")
    parser.add_argument("--restart-on-change", action="store_true",
                        help="start over (old checkpoints to stale/) if the run's checkpoints have another recipe")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="e.g. detection.max_iter=20")
    args = parser.parse_args(argv)

    def run() -> None:
        params = branch_section(load_params(args.params), "detection", args.model)
        for item in args.overrides:
            apply_override(params, item)
        config = parse_section(params, "detection", DetectionConfig)
        from eval.detection.train import run as train  # Detectron2 is imported only once the params are valid

        train(config, args.init, args.out, args.num_gpus, args.restart_on_change)

    return run_command(prog, run)


if __name__ == "__main__":
    sys.exit(main())
