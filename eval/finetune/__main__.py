"""The fine-tuning command line: thin argument parsing over :func:`eval.finetune.finetune`.

    python -m eval.finetune --params params.yaml --init {scratch|WEIGHTS} --out RUN_DIR [--model NAME] [--regime NAME]
        [key=value ...]

Under torchrun: ``torchrun --nproc_per_node 8 -m eval.finetune --params params.yaml --init encoder.pth --out RUN_DIR``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from spark.checkpoint import CheckpointError
from spark.config import ConfigError
from spark.engine import LOG_FORMAT, NonFiniteError

from .config import load_finetune_config
from .model import SCRATCH
from .trainer import finetune


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.finetune",
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
    logging.basicConfig(level=logging.INFO if int(os.environ.get("RANK", 0)) == 0 else logging.WARNING,
                        format=LOG_FORMAT)
    try:
        config = load_finetune_config(args.params, args.overrides, model=args.model, regime=args.regime)
        finetune(config, args.out, args.init, args.restart_on_change)
    except (ConfigError, CheckpointError, NonFiniteError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, NonFiniteError) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
