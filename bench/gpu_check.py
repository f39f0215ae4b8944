"""Does this GPU machine run what a paper run runs? One check of every path, <= 8 minutes on one H100, offline.

    make gpu-check                                     # = .venv/bin/python bench/gpu_check.py
    python bench/gpu_check.py --blocks environment ddp # some blocks only
    python bench/gpu_check.py --device cpu --tiny      # every block at toy sizes on the CPU (gloo, fp32): its tests

Blocks, each in its own process (a crash or a hang stays in its block):

  environment  CUDA builds of torch and torchvision (nms and roi_align on the device), the device, native bf16,
               NCCL, and whether a paper run compiles here (``compile: auto``: Triton and a C compiler on CUDA)
  data         the smoke benchmark, built offline by ``spark prepare --params configs/smoke.yaml`` in a temp dir
  pretrain     ``spark pretrain`` of the smoke preset on it, eager and compiled, bf16
  ddp          SparK steps under DistributedDataParallel in a one-process NCCL group (a run joins a group only
               with several processes), masked BNs synchronised as a DDP run does, eager and compiled
  finetune     ``spark finetune`` of the smoke preset
  detection    ``spark detect`` of the smoke preset (Mask R-CNN, Detectron2)
  throughput   img/s and peak GPU memory of the dense, sparse and zero_out pretraining steps of the paper preset's
               models (ResNet-50, ConvNeXt-B) at 224 px, batch 64, bf16, channels_last, eager
               (``bench/pretrain_step.py``: each configuration in its own process, taking turns)
  micro_batch  the per-device micro-batch ``micro_batch: auto`` picks for the paper preset's ResNet-50
               pretraining (global batch / GPUs = 512 images), read from the run's run.json; eager

Each block has a deadline: its share of ``--budget`` (480 s) plus what the blocks before it left unused, so the
whole stays within the budget. A block that fails or runs out of time is FAIL with one line saying why, and the
others still run. The script prints one table and writes it as JSON with every figure (``--out``, default
``results/gpu-check/``: ``gpu-check.json`` and each block's log). Exit code: 0 when every block passed, 1 when one
failed, 2 (after one line) without a CUDA device. ``--tiny`` runs the throughput and micro-batch blocks on the
smoke preset's model and size instead of the paper's; on the CPU every block runs fp32 (bf16 is emulated on most
CPUs, and inductor's CPU bf16 kernels gave NaN gradients) and DDP runs over gloo.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
SMOKE, PAPER = REPO / "configs/smoke.yaml", REPO / "configs/paper.yaml"
# Shares of the budget, in seconds of the default 480; the compiling blocks get the most.
SHARES = {"environment": 20, "data": 25, "pretrain": 110, "ddp": 80, "finetune": 45, "detection": 50,
          "throughput": 100, "micro_batch": 50}
DDP_STEPS = 3
# Sizes of the throughput block: per-device batch, rounds, steps per round and warm-up steps per configuration.
THROUGHPUT = {False: {"batch": 64, "rounds": 3, "steps": 5, "warmup": 2},
              True: {"batch": 4, "rounds": 1, "steps": 1, "warmup": 1}}


class Failed(Exception):
    """A check that did not pass; ``found`` keeps what the block measured before it failed."""

    def __init__(self, message: str, found: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.found = found or {}


@dataclass(frozen=True)
class Block:
    """What runs in a block's process: where its files go and how big it runs."""

    device: torch.device
    tiny: bool
    work: Path

    @property
    def precision(self) -> str:
        return "bf16" if self.device.type == "cuda" else "fp32"

    @property
    def data(self) -> Path:
        return self.work / "data"

    def smoke_overrides(self) -> list[str]:
        """Dotted overrides that point the smoke preset's stages at the data the data block prepared."""
        if not (self.data / "mini-in").is_dir() or not (self.data / "mini-coco").is_dir():
            raise Failed("no smoke data: the data block did not pass")
        from eval.pipeline.params import load_params

        params = load_params(SMOKE)
        root = Path(params["data"]["root"])
        return [f"data.root={self.data}"] + [
            f"{section}.{key}={self.data / Path(params[section][key]).relative_to(root)}"
            for section, key in (("pretrain", "data"), ("pretrain", "vis_data"), ("finetune", "data"),
                                 ("detection", "data_root"))]

    def spark(self, command: str, *args: Any) -> None:
        """Run ``spark COMMAND ARGS`` (``python -m eval.cli``) in the work dir, its output into the block's log;
        a failure raises its last line (the command's one-line error)."""
        process = subprocess.Popen([sys.executable, "-m", "eval.cli", command, *map(str, args)], cwd=self.work,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last = ""
        for line in process.stdout:
            sys.stdout.write(line)
            last = line.strip() or last
        sys.stdout.flush()
        if process.wait():
            raise Failed(last or f"spark {command} exited with code {process.returncode}")


def run_summary(run: Path, *metrics: str) -> dict[str, Any]:
    """What a training run's run.json and metrics.json say about how it ran."""
    info = json.loads((run / "run.json").read_text())
    values = json.loads((run / "metrics.json").read_text())
    return {"precision": info["precision"], **({"compile": info["compile"]} if "compile" in info else {}),
            "wall_s": info["wall_time_s"], **{key: values[key] for key in metrics}}


# The blocks: each returns (a one-line summary, what it found) or raises.

def environment(block: Block) -> tuple[str, dict[str, Any]]:
    import torch.distributed as dist
    import torchvision
    from torchvision.ops import nms, roi_align

    from spark.engine import AUTO_MIN_STEPS, Compilation
    from spark.engine.precision import native_bf16
    from spark.provenance import hardware

    device = block.device
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], device=device)
    kept = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=device), iou_threshold=0.5).tolist()
    pooled = roi_align(torch.ones(1, 1, 32, 32, device=device), [boxes], output_size=2, aligned=True)
    bf16, evidence = native_bf16(device)
    compilation = Compilation.resolve("auto", AUTO_MIN_STEPS, device, block.precision)
    found = {"device": hardware(), "torch": torch.__version__, "torchvision": torchvision.__version__,
             "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "bf16": evidence,
             "nccl": dist.is_nccl_available(), "compile": compilation.describe()}
    if kept != [0, 2] or not bool((pooled == 1).all()):
        raise Failed(f"torchvision ops on {device.type} are wrong: nms kept {kept}, roi_align {pooled.flatten()}",
                     found)
    if device.type == "cuda":
        missing = [what for what, ok in (("native bf16", bf16), ("NCCL", found["nccl"]),
                                         ("compiling", compilation.enabled)) if not ok]
        if missing:
            raise Failed(f"{found['device']}: no {', no '.join(missing)} ({evidence}; {compilation.describe()})", found)
    summary = (f"{found['device']}; torch {found['torch']} (CUDA {found['cuda']}, cuDNN {found['cudnn']}), "
               f"torchvision {found['torchvision']}; bf16: {evidence}")
    return summary, found


def data(block: Block) -> tuple[str, dict[str, Any]]:
    start = time.perf_counter()
    block.spark("prepare", "--params", SMOKE, f"data.root={block.data}")
    found = {"root": str(block.data), "seconds": time.perf_counter() - start,
             "files": sum(1 for path in block.data.rglob("*") if path.is_file())}
    return f"{found['files']} files in {found['seconds']:.1f} s", found


def pretrain(block: Block) -> tuple[str, dict[str, Any]]:
    overrides, found = block.smoke_overrides(), {}
    for mode in ("eager", "compiled"):
        run = block.work / "pretrain" / mode
        block.spark("pretrain", "--params", SMOKE, "--out", run, *overrides,
                    f"pretrain.precision={block.precision}", f"pretrain.compile={mode == 'compiled'}")
        found[mode] = run_summary(run, "loss", "img_per_s")
    return "; ".join(f"{mode}: loss {r['loss']:.3f}, {r['wall_s']:.0f} s" for mode, r in found.items()), found


def ddp(block: Block) -> tuple[str, dict[str, Any]]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from eval.pipeline.params import branch_config, load_params
    from spark.engine import Precision, train_step
    from spark.model import build_spark
    from spark.pretrain import PretrainConfig
    from spark.pretrain.optim import build_optimizer
    from spark.sparse import MaskedBatchNorm, convert_sync_batchnorm

    params = load_params(SMOKE)
    config = branch_config(params, PretrainConfig, model=next(iter(params["models"])))
    device, cuda = block.device, block.device.type == "cuda"
    precision = Precision(block.precision, config.channels_last)
    dist.init_process_group("nccl" if cuda else "gloo", store=dist.HashStore(), rank=0, world_size=1,  # no port
                            **({"device_id": device} if cuda else {}))
    found: dict[str, Any] = {"backend": dist.get_backend()}
    try:
        for mode in ("eager", "compiled"):
            torch.manual_seed(0)
            # as spark.pretrain.trainer.Pretrainer builds a DDP run's model
            model = convert_sync_batchnorm(precision.prepare_model(build_spark(config.model_config()).to(device)),
                                           dense=cuda)
            synced = sum(isinstance(m, MaskedBatchNorm) and m.sync for m in model.modules())
            optimizer = build_optimizer(model, config)
            step_model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
            step_model = torch.compile(step_model) if mode == "compiled" else step_model
            images = precision.prepare_input(
                torch.randn(config.global_batch, 3, config.input_size, config.input_size), device)
            losses = [train_step(lambda x: step_model(x, model.sample_visible(len(x), x.device)), optimizer, images,
                                 where=f"{mode} step {i + 1}", module=step_model, clip=config.clip or None,
                                 precision=precision).loss for i in range(DDP_STEPS)]
            found[mode] = {"losses": losses, "synced_masked_bns": synced}
            if not synced:
                raise Failed("no masked BN synchronises under DDP", found)
    finally:
        dist.destroy_process_group()
    return (f"{found['backend']}, {precision.name}, {found['eager']['synced_masked_bns']} synced masked BNs; "
            + "; ".join(f"{mode}: loss {found[mode]['losses'][-1]:.3f}" for mode in ("eager", "compiled"))), found


def finetune(block: Block) -> tuple[str, dict[str, Any]]:
    run = block.work / "finetune"
    block.spark("finetune", "--params", SMOKE, "--out", run, "--init", "scratch", *block.smoke_overrides(),
                f"finetune.precision={block.precision}")
    found = run_summary(run, "loss", "top1", "img_per_s")
    return f"{found['precision'].split(' (')[0]}: loss {found['loss']:.3f}, top-1 {found['top1']:.1f} %", found


def detection(block: Block) -> tuple[str, dict[str, Any]]:
    run = block.work / "detection"
    block.spark("detection", "--params", SMOKE, "--out", run, "--init", "scratch", *block.smoke_overrides())
    found = run_summary(run, "bbox", "segm")
    info = json.loads((run / "run.json").read_text())
    found.update(num_gpus=info["num_gpus"], device=info["hardware"])
    summary = f"Mask R-CNN on {found['num_gpus']} GPU(s): box AP {found['bbox']['AP']}, mask AP {found['segm']['AP']}"
    return summary, found


def throughput(block: Block) -> tuple[str, dict[str, Any]]:
    import pretrain_step as bench  # bench/, next to this script

    from eval.pipeline.params import branch_config, load_params
    from spark.pretrain import PretrainConfig

    params, sizes = load_params(SMOKE if block.tiny else PAPER), THROUGHPUT[block.tiny]
    found: dict[str, Any] = {}
    for model in params["models"]:
        config = branch_config(params, PretrainConfig, model=model)
        args = argparse.Namespace(arch=config.arch, input_size=config.input_size, decoder_width=config.decoder_width,
                                  channels_last=config.channels_last, device=block.device.type,
                                  threads=torch.get_num_threads(), variants=list(bench.VARIANTS), modes=["eager"],
                                  **sizes)
        for (variant, _, _), result in bench.measure(args, block.precision).items():
            found[f"{model} {variant}"] = {"arch": config.arch, "input_size": config.input_size,
                                           "batch": args.batch, "precision": block.precision,
                                           "channels_last": config.channels_last, **bench.summary(result, args.batch)}
    failed = [f"{name}: {r['error']}" for name, r in found.items() if "error" in r]
    if failed:
        raise Failed("; ".join(failed), found)
    summary = "; ".join(f"{name} {r['img_per_s']:.0f} img/s {r['peak_mb'] / 1024:.1f} GB" for name, r in found.items())
    return summary, found


def micro_batch(block: Block) -> tuple[str, dict[str, Any]]:
    from eval.pipeline.params import branch_config, load_params
    from eval.pipeline.resources import stage_resources
    from spark.engine.records import setup_logging
    from spark.pretrain import PretrainConfig, pretrain
    from spark.pretrain.data import list_images

    smoke = dict(item.split("=", 1) for item in block.smoke_overrides())
    path = SMOKE if block.tiny else PAPER
    params = load_params(path)
    model = next(iter(params["models"]))
    per_device = branch_config(params, PretrainConfig, model=model).global_batch // max(
        stage_resources(params, "pretrain").gpus, 1)
    # One step of the per-device batch, from the smoke images repeated (a manifest may list an image twice).
    manifest = block.work / "micro_batch_images.txt"
    images = itertools.cycle(list_images(smoke["pretrain.data"]))
    manifest.write_text("".join(f"{next(images)}\n" for _ in range(per_device)))
    config = branch_config(params, PretrainConfig, [
        f"pretrain.data={manifest}", f"pretrain.vis_data={smoke['pretrain.vis_data']}", "pretrain.epochs=1",
        "pretrain.warmup_epochs=0", f"pretrain.global_batch={per_device}", "pretrain.micro_batch=auto",
        f"pretrain.precision={block.precision}", "pretrain.compile=false"], model=model)
    setup_logging()
    run = block.work / "micro_batch"
    pretrain(config, run)
    info = json.loads((run / "run.json").read_text())
    found = {"preset": str(path.relative_to(REPO)), "model": model, "input_size": config.input_size,
             "per_device_batch": per_device, "precision": info["precision"], "compile": info["compile"]}
    if "micro_batch" not in info:
        raise Failed("run.json records no micro_batch: this checkout's pretraining does not choose one", found)
    found["micro_batch"] = info["micro_batch"]
    chosen = info["micro_batch"] or per_device
    return f"{model} at {config.input_size} px: {chosen} of {per_device} images per device per pass", found


BLOCKS: dict[str, Callable[[Block], tuple[str, dict[str, Any]]]] = {
    "environment": environment, "data": data, "pretrain": pretrain, "ddp": ddp, "finetune": finetune,
    "detection": detection, "throughput": throughput, "micro_batch": micro_batch,
}


def run_block(name: str, block: Block, result: Path) -> int:
    """A block's process: run it and write ``{"summary", "found"}`` or ``{"error", "found"}`` to ``result``."""
    try:
        summary, found = BLOCKS[name](block)
        outcome, code = {"summary": summary, "found": found}, 0
    except Exception as err:  # noqa: BLE001 - every failure is the block's result
        traceback.print_exc()
        line = (str(err).strip().splitlines() or [""])[0]
        if not isinstance(err, Failed):
            line = f"{type(err).__name__}: {line}"
        outcome, code = {"error": line, "found": getattr(err, "found", {})}, 1
    result.write_text(json.dumps(outcome, default=str))
    return code


def run_blocks(args: argparse.Namespace) -> dict[str, Any]:
    """Every chosen block in its own process group, each killed at its deadline; their results."""
    out, names = args.out, args.blocks
    out.mkdir(parents=True, exist_ok=True)
    shares = [SHARES[name] / sum(SHARES[n] for n in names) * args.budget for name in names]
    start, results = time.monotonic(), {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(work) / "inductor-cache"),
               **({"CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {})}
        for name, deadline in zip(names, itertools.accumulate(shares)):
            limit, began = max(deadline - (time.monotonic() - start), 1.0), time.monotonic()
            command = [sys.executable, __file__, "--block", name, "--device", args.device, "--work", work,
                       *(["--tiny"] if args.tiny else [])]
            with open(out / f"{name}.log", "w") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                           start_new_session=True)
                try:
                    process.wait(timeout=limit)
                    result = Path(work) / f"{name}.json"
                    outcome = (json.loads(result.read_text()) if result.is_file()
                               else {"error": f"exited with code {process.returncode} (see {log.name})"})
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)  # the block and every process it started
                    process.wait()
                    outcome = {"error": f"timed out after {limit:.0f} s (see {log.name})"}
            results[name] = {"status": "FAIL" if "error" in outcome else "PASS",
                             "seconds": time.monotonic() - began, "limit_s": limit, **outcome}
            print(f"gpu-check: {name} {results[name]['status']} in {results[name]['seconds']:.0f} s", file=sys.stderr,
                  flush=True)
    return {"passed": all(r["status"] == "PASS" for r in results.values()), "device": args.device,
            "tiny": args.tiny, "budget_s": args.budget, "wall_s": time.monotonic() - start, "blocks": results}


def table(report: dict[str, Any]) -> str:
    rows = ["| block | result | s | found, or why it failed |", "|---|---|---|---|"]
    for name, r in report["blocks"].items():
        rows.append(f"| {name} | {r['status']} | {r['seconds']:.0f} | {r.get('summary') or r.get('error')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="throughput and micro-batch at the smoke preset's size")
    parser.add_argument("--blocks", nargs="+", choices=list(BLOCKS), default=list(BLOCKS))
    parser.add_argument("--budget", type=float, default=480, help="seconds for all blocks together (default: 480)")
    parser.add_argument("--out", type=Path, default=REPO / "results/gpu-check",
                        help="folder for gpu-check.json and the blocks' logs (default: results/gpu-check)")
    parser.add_argument("--block", choices=list(BLOCKS), help=argparse.SUPPRESS)  # a block's own process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.block:
        device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return run_block(args.block, Block(device, args.tiny, args.work), args.work / f"{args.block}.json")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device (torch {torch.__version__} built with CUDA {torch.version.cuda}); run it on "
              "a GPU machine, or pass --device cpu --tiny")
        return 2
    report = run_blocks(args)
    print(table(report))
    path = args.out / "gpu-check.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"gpu-check: {'all blocks passed' if report['passed'] else 'FAILED'} in {report['wall_s']:.0f} s "
          f"(budget {report['budget_s']:.0f} s); wrote {path}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
