"""The ``spark`` command (``python -m eval.cli``, also under torchrun): a subcommand per stage of the DAG
(:mod:`eval.pipeline.stages`), plus ``estimate``, ``new-preset`` and ``visualize``.

    spark prepare   --params params.yaml [key.path=value ...]                  # build or check the datasets
    spark pretrain  --params params.yaml --out RUN_DIR [--model M] [--variant V] [--init-from W] [key.path=value ...]
    spark finetune  --params params.yaml --out RUN_DIR --init {scratch|W} [--model M] [--regime R] [key.path=value ...]
    spark detection --params params.yaml --out RUN_DIR --init {scratch|W} [--model M] [key.path=value ...]
    spark report    --params params.yaml [--out results/PRESET]
    spark estimate  --params configs/paper.yaml [--batch N] [--json PATH] [key.path=value ...]  # device-hours
    spark new-preset --unlabelled DIR --labelled DIR [--coco DIR] --out configs/mine.yaml  # your own images
    spark visualize runs/.../checkpoint.pth a.jpg b.jpg --out fig.png

Every job of the pipeline is one of these commands. A command reads the params file once; a training stage
resolves its section for the branch (:func:`eval.pipeline.params.branch_config`), takes ``resources.<stage>``
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
from typing import Any, Iterator, Sequence

from eval.arms import SCRATCH, SUPERVISED
from eval.pipeline.params import branch_config, load_params, with_overrides
from eval.pipeline.engines import record_for_snakemake
from eval.pipeline.launch import launch_command
from eval.pipeline.resources import StageResources, stage_resources
from eval.pipeline.stages import STAGES, Job, Stage, supervised_start
from spark.config import ConfigError
from spark.errors import run_command
from spark.io import check_output_dir


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    return run_command(f"spark {args.command}", lambda: args.run(args, argv))


def _run_stage(stage: Stage, args: argparse.Namespace, argv: list[str]) -> None:
    """One job of ``stage``: a training branch (:func:`_training_job`), or the preset's one job, printing the
    files it wrote; under ``dvc repro``, Snakemake then records them as up to date
    (:func:`eval.pipeline.engines.record_for_snakemake`)."""
    if stage.trains:
        job = _training_job(stage, args, argv)
        with _threads(job.resources):
            stage.handler(job)
        written = [args.out / "metrics.json"]
    else:
        start = time.perf_counter()
        params = load_params(args.params, args.overrides)
        schema = stage.section()
        written = list(stage.handler(Job(schema.parse(params) if schema else params, args,
                                         stage_resources(params, stage.name), params)) or ())
        for path in written:
            print(f"{stage.name}: wrote {path}")
        print(f"{stage.name}: done in {time.perf_counter() - start:.1f} s")
    if (recorded := record_for_snakemake(written)) is not None:
        print(recorded, file=sys.stderr)


def _training_job(stage: Stage, args: argparse.Namespace, argv: list[str]) -> Job:
    """The branch's validated section and the stage's resources, from the job's one read of the params file
    (dotted overrides apply to ``resources`` too). A job asking for GPUs it cannot see stops here; with
    several processes (and no launcher of its own), this process is replaced by torchrun's workers first. A training
    process that computes on the CPU then keeps freed host memory for its next step
    (:mod:`spark.engine.distributed`)."""
    params = load_params(args.params)
    check_output_dir(args.out)
    schema = stage.section()
    branch = {"model": args.model, "regime": getattr(args, "regime", None), "variant": getattr(args, "variant", None)}
    config = branch_config(params, schema, args.overrides, **branch) if schema else with_overrides(params,
                                                                                                 args.overrides)
    params = with_overrides(params, args.overrides)
    resources = stage_resources(params, stage.name)
    if getattr(args, "init", None) == SUPERVISED:
        if args.model is None:
            raise ConfigError(f"--init {SUPERVISED}: name the model (--model), whose supervised weights it reads")
        args.init = str(supervised_start(params, stage.name, args.model))
    from spark.engine import require_gpus

    require_gpus(f"resources.{stage.name}.gpus", resources.gpus)
    if stage.own_processes and resources.nodes > 1:
        raise ConfigError(f"params: resources.{stage.name}.nodes: {stage.name} runs on one node "
                          f"(Detectron2's launcher here), got {resources.nodes}")
    if resources.launches_processes and not stage.own_processes and "LOCAL_RANK" not in os.environ:
        _restart_under_launcher(stage.name, resources, argv)
    if not stage.own_processes:
        from spark.engine.records import setup_logging

        setup_logging()  # the training runs' log lines on stderr
    import torch

    from spark.engine import retain_freed_memory

    if not torch.cuda.is_available():
        retain_freed_memory()
    return Job(config, args, resources, params)


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


def _new_preset(args: argparse.Namespace, argv: list[str]) -> None:
    from eval.new_preset import new_preset

    if args.budget_hours <= 0:
        raise ConfigError(f"--budget-hours: must be > 0, got {args.budget_hours}")
    new_preset(args.unlabelled, args.labelled, args.out, coco=args.coco, arch=args.arch,
               budget_hours=args.budget_hours, supervised=args.supervised, ablation=args.ablation, scale=args.scale)
    print(f"wrote {args.out}; run it with either engine:\n"
          f"  snakemake --cores all --configfile {args.out}\n"
          f"  cp {args.out} params.yaml && dvc repro")


def _visualize(args: argparse.Namespace, argv: list[str]) -> None:
    from spark.engine.records import setup_logging
    from spark.pretrain.data import load_images
    from spark.pretrain.visualize import load_model, write_reconstruction

    setup_logging()
    model = load_model(args.checkpoint, args.arch, args.input_size)
    write_reconstruction(model, load_images(args.images, model.config.input_size), args.out, seed=args.seed)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spark", description="SparK: every stage of the reproduction.",
                                     epilog="Exit codes: 0 done, 2 bad input, 1 a failed run.")
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES.values():
        _stage_command(commands, stage)

    estimate = commands.add_parser("estimate", help="device-hours of every training job, from a few steps timed here")
    _params_argument(estimate)
    estimate.add_argument("--batch", type=int, help="largest per-device batch to time (default: 32 on a GPU, 1 on "
                                                      "a CPU; the preset's own when smaller)")
    estimate.add_argument("--json", type=Path,
                          help="where to write it as JSON (default: runs/PRESET/estimate.json, which sizes the "
                               "SLURM resubmissions)")
    _overrides_argument(estimate, "pretrain.epochs=800")
    estimate.set_defaults(run=_estimate)

    preset = commands.add_parser("new-preset", help="a complete, commented preset for your own image folders")
    preset.add_argument("--unlabelled", type=Path, required=True,
                        help="unlabelled images for pretraining, at any depth (other files are ignored)")
    preset.add_argument("--labelled", type=Path, required=True,
                        help="ImageFolder: <class>/<image>, or train/<class>/... and val/<class>/...")
    preset.add_argument("--coco", type=Path, help="COCO-format detection data (annotations/instances_{train,val}2017"
                                                  ".json, train2017/, val2017/): adds Mask R-CNN")
    preset.add_argument("--out", type=Path, required=True, help="the preset to write, e.g. configs/mine.yaml")
    preset.add_argument("--arch", default="resnet50", help="a timm ResNet or ConvNeXt (default: resnet50)")
    preset.add_argument("--budget-hours", type=float, default=24.0,
                        help="device-hours on this machine the run may take; sets the epochs (default: 24)")
    preset.add_argument("--supervised", help="the supervised arm's weights: torchvision:<weights>, "
                                             "timm:<model>.<tag>, a file, or none (default: the model's published "
                                             "ImageNet weights if they are in the local cache)")
    preset.add_argument("--ablation", action="store_true", help="also pretrain and fine-tune SparK's zero-outing "
                                                                "ablation")
    preset.add_argument("--scale", choices=("run", "smoke"), default="run",
                        help="smoke: every stage at toy size (one seed, one epoch) to check folders and DAG first")
    preset.set_defaults(run=_new_preset)

    vis = commands.add_parser("visualize", help="reconstruction figure (input | masked | reconstruction | pasted)")
    vis.add_argument("checkpoint", type=Path, help="a checkpoint with decoder (our checkpoint.pth or the authors')")
    vis.add_argument("images", type=Path, nargs="+")
    vis.add_argument("--out", type=Path, required=True, help="PNG to write")
    vis.add_argument("--arch", help="architecture, for checkpoints that do not record their config")
    vis.add_argument("--input-size", type=int, default=224, help="with --arch (default: 224)")
    vis.add_argument("--seed", type=int, default=0, help="seed of the mask")
    vis.set_defaults(run=_visualize)
    return parser


def _stage_command(commands: Any, stage: Stage) -> None:
    """A stage's subcommand: its params file and dotted overrides; for a training stage, its run directory, the
    branch (model, and variant or init and label regime) and the resume policy; then the stage's own options."""
    command = commands.add_parser(stage.name, help=stage.help)
    _params_argument(command)
    if stage.trains:
        section = stage.name
        command.add_argument("--out", type=Path, required=True,
                             help="run directory; re-running the command resumes it")
        command.add_argument("--model", help=f"merge params['models'][MODEL]['{section}'] over the {section} section")
        if stage.pretrains:
            command.add_argument("--variant", help="then merge params['ablations'][VARIANT] ('sparse': the method "
                                                   "itself)")
        else:
            command.add_argument("--init", required=True,
                                 help=f"'{SCRATCH}' (random init), '{SUPERVISED}' (the model's supervised "
                                      "weights, as its section's supervised_weights says) or encoder weights: our "
                                      "encoder.pth or SparK checkpoint, the authors' released .pth")
        if stage.regimes:
            command.add_argument("--regime", help="then merge params['label_regimes'][REGIME]")
        command.add_argument("--restart-on-change", action="store_true",
                             help="start over (setting the old checkpoint aside) if the run's checkpoint has another "
                                  "recipe")
    for option in stage.options:
        command.add_argument(*option.flags, **option.settings)
    _overrides_argument(command, f"{stage.name}.seed=1" if stage.trains else "data.seed=1")
    command.set_defaults(run=lambda args, argv: _run_stage(stage, args, argv))


def _params_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("--params", type=Path, default=Path("params.yaml"),
                         help="params file (default: params.yaml)")


def _overrides_argument(command: argparse.ArgumentParser, example: str) -> None:
    command.add_argument("overrides", nargs="*", metavar="key.path=value", help=f"e.g. {example}")


if __name__ == "__main__":
    sys.exit(main())
