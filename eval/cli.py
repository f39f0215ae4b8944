"""The ``spark`` command (``python -m eval.cli``, also under torchrun): every stage of the reproduction.

    spark prepare   --params params.yaml [key.path=value ...]                  # build or check the datasets
    spark pretrain  --params params.yaml --out RUN_DIR [--model M] [--variant V] [--init-from W] [key.path=value ...]
    spark finetune  --params params.yaml --out RUN_DIR --init {scratch|W} [--model M] [--regime R] [key.path=value ...]
    spark detect    --params params.yaml --out RUN_DIR --init {scratch|W} [--model M] [key.path=value ...]
    spark report    --params params.yaml [--out results/PRESET]
    spark estimate  --params configs/paper.yaml [--batch N] [--json PATH] [key.path=value ...]  # device-hours
    spark visualize runs/.../checkpoint.pth a.jpg b.jpg --out fig.png

Every job of the pipeline is one of these commands. A command reads the params file once; a training stage
resolves its section for the branch (:func:`eval.pipeline.branches.branch_config`), takes ``resources.<stage>``
(torch threads; with ``gpus > 1`` or ``nodes > 1`` it restarts itself under torchrun, one process per GPU of every
node (:mod:`eval.pipeline.launch`), while Detectron2 starts its own) and runs; re-running the command resumes the
run directory. Exit codes are the same everywhere (:mod:`spark.errors`): 0 done, 2 bad input (params, data,
weights), 1 a failed run, 75 a run stopped before its job's time limit (the same command continues it).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from eval.arms import SCRATCH
from eval.pipeline.branches import branch_config
from eval.pipeline.launch import launch_command
from eval.pipeline.resources import STAGES, StageResources, stage_resources
from spark.config import ConfigError, Section, load_params, with_overrides
from spark.errors import InputError, run_command

S = TypeVar("S", bound=Section)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    return run_command(f"spark {args.command}", lambda: args.run(args, argv))


def _pretrain(args: argparse.Namespace, argv: list[str]) -> None:
    from spark.pretrain import PretrainConfig, pretrain

    _log_to_console()
    config, resources = _job(args, argv, PretrainConfig, variant=args.variant)
    with _threads(resources):
        pretrain(config, args.out, init_from=args.init_from, restart_on_change=args.restart_on_change)


def _finetune(args: argparse.Namespace, argv: list[str]) -> None:
    from eval.finetune import FinetuneConfig, finetune

    _log_to_console()
    config, resources = _job(args, argv, FinetuneConfig, regime=args.regime)
    with _threads(resources):
        finetune(config, args.out, args.init, args.restart_on_change)


def _detect(args: argparse.Namespace, argv: list[str]) -> None:
    from eval.detection.config import DetectionConfig

    config, resources = _job(args, argv, DetectionConfig, launches_workers=True)
    import torch

    from spark.engine import require_gpus

    if args.num_gpus is not None:
        require_gpus("--num-gpus", args.num_gpus)
    from eval.detection.train import run  # Detectron2 is imported only once the params are valid

    num_gpus = args.num_gpus if args.num_gpus is not None else (
        resources.gpus if resources.gpus > 1 else torch.cuda.device_count())
    with _threads(resources):
        run(config, args.init, args.out, num_gpus, args.restart_on_change)


def _job(args: argparse.Namespace, argv: list[str], schema: type[S], launches_workers: bool = False,
         **branch: str | None) -> tuple[S, StageResources]:
    """The branch's validated section and the stage's resources, from the job's one read of the params file
    (dotted overrides apply to ``resources`` too). A job asking for GPUs it cannot see stops here; with
    several processes (and no launcher of its own), this process is replaced by torchrun's workers first. A training
    process that computes on the CPU then keeps freed host memory for its next step
    (:mod:`spark.engine.distributed`)."""
    params = load_params(args.params)
    _check_output_dir(args.out)
    config = branch_config(params, schema, args.overrides, model=args.model, **branch)
    resources = stage_resources(with_overrides(params, args.overrides), schema.SECTION)
    from spark.engine import require_gpus

    require_gpus(f"resources.{schema.SECTION}.gpus", resources.gpus)
    if launches_workers and resources.nodes > 1:
        raise ConfigError(f"params: resources.{schema.SECTION}.nodes: {schema.SECTION} runs on one node "
                          f"(Detectron2's launcher here), got {resources.nodes}")
    if resources.launches_processes and not launches_workers and "LOCAL_RANK" not in os.environ:
        _restart_under_launcher(schema.SECTION, resources, argv)
    import torch

    from spark.engine import retain_freed_memory

    if not torch.cuda.is_available():
        retain_freed_memory()
    return config, resources


def _check_output_dir(out: Path) -> None:
    """``--out`` is a directory to create or to resume: a file standing where it or a parent of it would go stops
    the command before any work."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise InputError(f"--out {out}: {path} exists and is not a directory")
            return


def _log_to_console() -> None:
    """The training runs' log lines on stderr (Detectron2 sets up its own; prepare and report print)."""
    from spark.engine.records import setup_logging

    setup_logging()


def _restart_under_launcher(stage: str, resources: StageResources, argv: list[str]) -> None:
    """Replace this process by torchrun (one per node: srun) running this command once per GPU (each worker reads
    the params)."""
    command = launch_command(stage, resources, argv)
    sys.stdout.flush()
    threads = resources.threads_per_process
    os.execvpe(command[0], command, {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})})


@contextmanager
def _threads(resources: StageResources) -> Iterator[None]:
    """The job's torch threads (and its workers', through OMP_NUM_THREADS) if the params set them, restored
    afterwards."""
    import torch

    threads = resources.threads_per_process
    if threads is None:
        yield
        return
    previous, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def _prepare(args: argparse.Namespace, argv: list[str]) -> None:
    from eval.data.config import DataConfig
    from eval.data.prepare import prepare

    start = time.perf_counter()
    for manifest in prepare(DataConfig.parse(load_params(args.params, args.overrides))):
        print(f"prepare: wrote {manifest}")
    print(f"prepare: done in {time.perf_counter() - start:.1f} s")


def _report(args: argparse.Namespace, argv: list[str]) -> None:
    from eval.pipeline.dag import layout
    from eval.report import report

    params = load_params(args.params)
    out = args.out or Path(layout(params).results)
    _check_output_dir(out)
    print(f"wrote {report(params, out)}")


def _estimate(args: argparse.Namespace, argv: list[str]) -> None:
    from eval.estimate import estimate, format_estimate
    from eval.pipeline.dag import layout
    from spark.io import write_json

    params = load_params(args.params, args.overrides)
    result = estimate(params, args.batch, args.params)
    print(format_estimate(result))
    path = args.json or layout(params).estimate
    write_json(path, result)
    print(f"wrote {path}")


def _visualize(args: argparse.Namespace, argv: list[str]) -> None:
    from spark.pretrain.data import load_images
    from spark.pretrain.visualize import load_model, write_reconstruction

    _log_to_console()
    model = load_model(args.checkpoint, args.arch, args.input_size)
    write_reconstruction(model, load_images(args.images, model.input_size[0]), args.out, seed=args.seed)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spark", description="SparK: every stage of the reproduction.",
                                     epilog="Exit codes: 0 done, 2 bad input, 1 a failed run.")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="build the mini benchmark, or check ImageNet/COCO in place")
    _params_argument(prepare)
    prepare.add_argument("overrides", nargs="*", metavar="key.path=value", help="e.g. data.seed=1")
    prepare.set_defaults(run=_prepare)

    pretrain = _training_command(commands, "pretrain", _pretrain, "SparK pretraining into one resumable run directory")
    pretrain.add_argument("--variant", help="then merge params['ablations'][VARIANT] ('sparse': the method itself)")
    pretrain.add_argument("--init-from", type=Path, help="initial weights (ours or the authors'); ignored on resume")

    finetune = _training_command(commands, "finetune", _finetune,
                                 "fine-tune an encoder (or from scratch) on an ImageFolder")
    finetune.add_argument("--regime", help="then merge params['label_regimes'][REGIME]")
    _init_argument(finetune)

    detect = _training_command(commands, "detect", _detect, "Mask R-CNN transfer on COCO-format data (Detectron2)")
    _init_argument(detect)
    detect.add_argument("--num-gpus", type=int,
                        help="DDP processes, one per GPU, with SyncBN; 0 or 1 trains in this process (default: "
                             "resources.detection.gpus when > 1, else every visible GPU)")

    report = commands.add_parser("report", help="the paper's tables and REPORT.md from every run's metrics")
    _params_argument(report)
    report.add_argument("--out", type=Path, help="default: results/<preset>")
    report.set_defaults(run=_report)

    estimate = commands.add_parser("estimate", help="device-hours of every training job, from a few steps timed here")
    _params_argument(estimate)
    estimate.add_argument("--batch", type=int, help="largest per-device batch to time (default: 32 on a GPU, 1 on "
                                                      "a CPU; the preset's own when smaller)")
    estimate.add_argument("--json", type=Path,
                          help="where to write it as JSON (default: runs/PRESET/estimate.json, which sizes the "
                               "SLURM resubmissions)")
    estimate.add_argument("overrides", nargs="*", metavar="key.path=value", help="e.g. pretrain.epochs=800")
    estimate.set_defaults(run=_estimate)

    vis = commands.add_parser("visualize", help="reconstruction figure (input | masked | reconstruction | pasted)")
    vis.add_argument("checkpoint", type=Path, help="a checkpoint with decoder (our checkpoint.pth or the authors')")
    vis.add_argument("images", type=Path, nargs="+")
    vis.add_argument("--out", type=Path, required=True, help="PNG to write")
    vis.add_argument("--arch", help="architecture, for checkpoints that do not record their config")
    vis.add_argument("--input-size", type=int, default=224, help="with --arch (default: 224)")
    vis.add_argument("--seed", type=int, default=0, help="seed of the mask")
    vis.set_defaults(run=_visualize)
    return parser


def _training_command(commands: Any, name: str, run: Callable, help_: str) -> argparse.ArgumentParser:
    """The options every training stage shares: where its params and run directory are, the branch's model, the
    resume policy and dotted overrides."""
    section = next(stage for stage, command in STAGES.items() if command == name)
    command = commands.add_parser(name, help=help_)
    _params_argument(command)
    command.add_argument("--out", type=Path, required=True, help="run directory; re-running the command resumes it")
    command.add_argument("--model", help=f"merge params['models'][MODEL]['{section}'] over the {section} section")
    command.add_argument("--restart-on-change", action="store_true",
                         help="start over (setting the old checkpoint aside) if the run's checkpoint has another "
                              "recipe")
    command.add_argument("overrides", nargs="*", metavar="key.path=value", help=f"e.g. {section}.seed=1")
    command.set_defaults(run=run)
    return command


def _params_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("--params", type=Path, default=Path("params.yaml"),
                         help="params file (default: params.yaml)")


def _init_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("--init", required=True,
                         help=f"'{SCRATCH}' (random init) or encoder weights: our encoder.pth or SparK checkpoint, "
                              "the authors' released .pth")


if __name__ == "__main__":
    sys.exit(main())
