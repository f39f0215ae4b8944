"""The ``spark`` console script: one entry point for every stage, thin argument parsing over the library.

    spark prepare   --params params.yaml                          # build or check the datasets
    spark pretrain  --params params.yaml --out RUN_DIR [--model M] [--variant V] [key.path=value ...]
    spark finetune  --params params.yaml --init {scratch|encoder.pth} --out RUN_DIR [--model M] [--regime R]
    spark detect    --params params.yaml --init {scratch|encoder.pth} --out RUN_DIR [--model M]
    spark report    --params params.yaml [--out results/PRESET]
    spark visualize runs/pretrain/checkpoint.pth a.jpg b.jpg --out fig.png

Each stage is also ``python -m`` its module (what Snakemake and DVC run, and what torchrun needs):
``torchrun --nproc_per_node 8 -m spark.pretrain --params params.yaml --out runs/pretrain``. Exit codes are the
same everywhere (:mod:`spark.errors`): 0 done, 2 bad input (params, data, weights), 1 a failed run.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Sequence

from spark.errors import run_command

# Stages whose command line lives with their code (imported only when called): name -> (module, help).
STAGE_COMMANDS = {
    "prepare": ("spark.data.prepare", "build the mini benchmark, or check ImageNet/COCO in place"),
    "finetune": ("eval.finetune.__main__", "fine-tune an encoder (or from scratch) on an ImageFolder"),
    "detect": ("eval.detection.__main__", "Mask R-CNN transfer on COCO-format data (Detectron2)"),
    "report": ("eval.report", "the paper's tables and REPORT.md from every run's metrics"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in STAGE_COMMANDS:
        module, _ = STAGE_COMMANDS[argv[0]]
        return importlib.import_module(module).main(argv[1:], prog=f"spark {argv[0]}")
    args = _parser().parse_args(argv)
    from spark.engine import setup_logging

    setup_logging()
    return run_command(f"spark {args.command}", lambda: args.run(args))


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
    parser = argparse.ArgumentParser(prog="spark", description="SparK: every stage of the reproduction.",
                                     epilog="Exit codes: 0 done, 2 bad input, 1 a failed run.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_) in STAGE_COMMANDS.items():
        commands.add_parser(name, help=f"{help_} (see `spark {name} --help`)")

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
