"""``spark finetune`` (``python -m eval.finetune``): thin argument parsing over :func:`eval.finetune.finetune`.

    spark finetune --params params.yaml --init {scratch|WEIGHTS} --out RUN_DIR [--model NAME] [--regime NAME]
        [key=value ...]

Under torchrun: ``torchrun --nproc_per_node 8 -m eval.finetune --params params.yaml --init encoder.pth --out RUN_DIR``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spark.engine import setup_logging
from spark.errors import run_command

from .config import load_finetune_config
from .model import SCRATCH
from .trainer import finetune


def main(argv: list[str] | None = None, prog: str = "python -m eval.finetune") -> int:
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Fine-tune a timm classifier on an ImageFolder; write top-1/top-5.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file with a `finetune` section (default: params.yaml)")
    parser.add_argument("--init", required=True,
                        help=f"'{SCRATCH}' (random init) or weights: our encoder.pth or SparK checkpoint, "
                             "the authors' released .pth")
    parser.add_argument("--out", type=Path, required=True, help="run directory; re-running the command resumes it")
    parser.add_argument("--model", help="merge params['models'][MODEL]['finetune'] over the finetune section")
    parser.add_argument("--regime", help="merge params['label_regimes'][REGIME] over the finetune section")
    parser.add_argument("--restart-on-change", action="store_true",
                        help="start over (keeping checkpoint.stale.pth) if the run's checkpoint has another recipe")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="e.g. finetune.epochs=2")
    args = parser.parse_args(argv)
    setup_logging()

    def run() -> None:
        config = load_finetune_config(args.params, args.overrides, model=args.model, regime=args.regime)
        finetune(config, args.out, args.init, args.restart_on_change)

    return run_command(prog, run)


if __name__ == "__main__":
    sys.exit(main())
