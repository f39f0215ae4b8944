"""The ``spark`` console script: thin argument parsing over the library's entry points.

    spark pretrain --params params.yaml --out RUN_DIR [--model M] [--variant V] [--init-from CKPT] [key.path=value ...]
    spark visualize runs/pretrain/checkpoint.pth a.jpg b.jpg --out fig.png
    spark prepare ...            (see ``spark prepare --help``)

Under torchrun: ``torchrun --nproc_per_node 8 -m spark.pretrain --params params.yaml --out runs/pretrain``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prepare"]:  # spark.data owns its arguments
        from spark.data.prepare import main as prepare

        return prepare(argv[1:])
    args = _parser().parse_args(argv)
    from spark.checkpoint import CheckpointError
    from spark.config import ConfigError
    from spark.engine import LOG_FORMAT, NonFiniteError
    from spark.pretrain.data import BadImageError

    rank = int(os.environ.get("RANK", 0))  # under torchrun, only rank 0 reports progress
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=LOG_FORMAT)
    try:
        args.run(args)
    except (ConfigError, CheckpointError, NonFiniteError, BadImageError) as err:
        print(f"spark {argv[0]}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, (ConfigError, CheckpointError)) else 1
    return 0


def _pretrain(args: argparse.Namespace) -> None:
    from spark.pretrain import load_pretrain_config, pretrain

    config = load_pretrain_config(args.params, args.overrides, model=args.model, variant=args.variant)
    pretrain(config, args.out, init_from=args.init_from, restart_on_change=args.restart_on_change)


def _visualize(args: argparse.Namespace) -> None:
    from spark.pretrain.data import load_images
    from spark.pretrain.visualize import load_model, write_reconstruction

    model = load_model(args.checkpoint, args.arch, args.input_size)
    write_reconstruction(model, load_images(args.images, model.input_size[0]), args.out, seed=args.seed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spark", description="SparK: prepare data, pretrain, draw reconstructions.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare", help="build or check the datasets (see `spark prepare --help`)")

    run = commands.add_parser("pretrain", help="SparK pretraining into one resumable run directory")
    run.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    run.add_argument("--out", type=Path, required=True, help="run directory; re-running the command resumes it")
    run.add_argument("--model", help="merge params['models'][MODEL]['pretrain'] over the pretrain section")
    run.add_argument("--variant", help="then merge params['ablations'][VARIANT] ('sparse': the method itself)")
    run.add_argument("--init-from", type=Path, help="initial weights (ours or the authors'); ignored on resume")
    run.add_argument("--restart-on-change", action="store_true",
                     help="start over (keeping checkpoint.stale.pth) if the run's checkpoint has another recipe")
    run.add_argument("overrides", nargs="*", metavar="key.path=value", help="e.g. pretrain.epochs=2")
    run.set_defaults(run=_pretrain)

    vis = commands.add_parser("visualize", help="reconstruction figure (input | masked | reconstruction | pasted)")
    vis.add_argument("checkpoint", type=Path, help="a checkpoint with decoder (our checkpoint.pth or the authors')")
    vis.add_argument("images", type=Path, nargs="+")
    vis.add_argument("--out", type=Path, required=True, help="PNG to write")
    vis.add_argument("--arch", help="architecture, for checkpoints that do not record their config")
    vis.add_argument("--input-size", type=int, default=224, help="with --arch (default: 224)")
    vis.add_argument("--seed", type=int, default=0, help="seed of the mask")
    vis.set_defaults(run=_visualize)
    return parser


if __name__ == "__main__":
    sys.exit(main())
