"""``spark new-preset``: a complete, commented preset for your own images, from a look at the folders.

    spark new-preset --unlabelled DIR --labelled DIR [--coco DIR] --out configs/mine.yaml
                     [--arch resnet50] [--budget-hours 24] [--supervised SOURCE|none] [--ablation] [--scale smoke]

It lists the folders (no image is decoded: ``prepare`` checks every one), reads the sizes of a spread sample,
picks an input size (a multiple of the encoder's stride 32, so the mask grid is input/32 cells a side) and, at
``--scale run``, the epochs that fit ``--budget-hours`` device-hours on this machine (a few training steps timed
as ``spark estimate`` times them). The arms, fine-tuned on your labels with the same seeds: from scratch, from
published supervised ImageNet weights (when they are in the local cache: nothing is downloaded), and from SparK
pretraining on your unlabelled images (and, with ``--ablation``, from its zero-outing ablation). ``--scale smoke``
writes the smallest preset that runs every stage (one seed, one epoch, 64 px): minutes, to check the folders and
the DAG before a real run.
"""
from __future__ import annotations

import datetime
import math
import os
import statistics
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import yaml
from PIL import Image

from eval.data.config import OwnConfig
from eval.data.errors import DataError
from eval.data.own import Folders, scan_folders
from eval.data.paths import OWN_UNLABELLED, coco2017_split
from eval.finetune.recipes import RECIPES
from eval.supervised import MissingWeightsError, weights_file
from spark.config import ConfigError
from spark.images import spread
from spark.io import write_text

STRIDE = 32  # a timm convnet's coarsest feature map: one mask cell per 32x32 pixels
INPUT_SIZES = (64, 224)  # the input sizes a preset picks between: a 2x2 mask grid at least, ImageNet's 7x7 at most
SIZE_SAMPLE = 200  # images whose sizes are read (headers only)
PRETRAIN_SHARE = 0.5  # of the budget: pretraining; the rest is shared by the fine-tunings
MAX_EPOCHS = {"pretrain": 1600, "finetune": 300}  # the paper's schedules: more is not a reproduction
SEEDS = {"smoke": [0], "run": [0, 1, 2]}


@dataclass(frozen=True)
class Inspection:
    """What the folders hold, and the sizes of a sample of their images."""

    folders: Folders
    short_sides: list[int]  # the shorter side of each sampled image that could be opened

    @property
    def median_side(self) -> int:
        return int(statistics.median(self.short_sides))


def inspect(unlabelled: Path, labelled: Path) -> Inspection:
    """List the folders (a :class:`DataError` with one line for a folder the DAG cannot use) and read the sizes of
    a spread sample of their images."""
    folders = scan_folders(OwnConfig(unlabelled=str(unlabelled), labelled=str(labelled)))
    sides = []
    for path in spread(folders.unlabelled + folders.labelled_images(), SIZE_SAMPLE):
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except (OSError, ValueError, SyntaxError):  # listed by prepare's full check
            continue
    if not sides:
        raise DataError(f"{unlabelled}, {labelled}: none of {SIZE_SAMPLE} sampled images opens")
    return Inspection(folders, sides)


def input_size(median_side: int) -> int:
    """The median image's shorter side rounded down to a multiple of the stride, within :data:`INPUT_SIZES`: no
    upsampling of typical images beyond what the smallest grid needs, no more than ImageNet's cost per image."""
    return min(max(median_side // STRIDE * STRIDE, INPUT_SIZES[0]), INPUT_SIZES[1])


def budget_epochs(budget_hours: float, pretrain_epoch_hours: float, finetune_epoch_hours: float) -> dict[str, int]:
    """Epochs that spend :data:`PRETRAIN_SHARE` of ``budget_hours`` on pretraining (one epoch of every
    pretraining costs ``pretrain_epoch_hours``) and the rest on the fine-tunings (one epoch of all of them:
    ``finetune_epoch_hours``); at least 1, at most the paper's schedules."""
    shares = {"pretrain": (PRETRAIN_SHARE, pretrain_epoch_hours), "finetune": (1 - PRETRAIN_SHARE,
                                                                                finetune_epoch_hours)}
    return {stage: min(MAX_EPOCHS[stage], max(1, math.floor(share * budget_hours / hours)))
            for stage, (share, hours) in shares.items()}


def finetune_recipe(arch: str) -> str:
    """The authors' recipe a model's fine-tuning starts from: its own, else its family's."""
    if arch in RECIPES:
        return arch
    for family, recipe in (("resnet", "resnet50"), ("convnext", "convnext_small")):
        if arch.startswith(family):
            return recipe
    raise ConfigError(f"--arch: {arch!r} has no fine-tuning recipe; use a ResNet or a ConvNeXt ({', '.join(RECIPES)})")


def published_weights(arch: str) -> str | None:
    """The usual supervised ImageNet weights of ``arch``: torchvision's for its ResNets, else timm's in1k."""
    depth = arch.removeprefix("resnet")
    if depth in ("18", "34", "50", "101", "152"):
        return f"torchvision:ResNet{depth}_Weights.IMAGENET1K_V1"
    tags = [name for name in timm.list_pretrained(f"{arch}.*") if name.endswith("in1k")]
    return next((t for t in tags if t.endswith(".fb_in1k")), tags[0] if tags else None)


def supervised_arm(arch: str, requested: str | None) -> tuple[str | None, str]:
    """The supervised arm's weights (None: no such arm) and a comment saying why. An explicit source must be on
    this machine; the default published one is left out, with the command that fetches it, when it is not."""
    if requested == "none":
        return None, "no supervised arm (--supervised none)"
    source = requested or published_weights(arch)
    if source is None:
        return None, f"no supervised arm: no published ImageNet weights known for {arch}"
    try:
        weights_file(source, own="")
    except MissingWeightsError as err:
        if requested:
            raise
        return None, f"no supervised arm: {err}; then set supervised_models: [{arch}] and finetune.supervised_weights"
    return source, f"supervised arm: {source}"


def preset_text(out: Path, name: str, arch: str, inspection: Inspection, unlabelled: Path, labelled: Path,
                 coco: Path | None, supervised: tuple[str | None, str], ablation: bool, scale: str,
                 budget_hours: float, epochs: dict[str, int]) -> str:
    """The preset's text: every key a run reads, commented; ``out`` is where the commands it prints read it."""
    folders, size = inspection.folders, (64 if scale == "smoke" else input_size(inspection.median_side))
    source, why = supervised
    root = f"data/{name}"
    classes = folders.classes
    val_fraction = OwnConfig().val_fraction
    split = ("already split (train/, val/)" if "train" in folders.labelled
             else f"split here: {val_fraction:.0%} of each class for validation")
    smoke = scale == "smoke"
    train_images = folders.training_images(val_fraction)
    batch = {"pretrain": _batch(len(folders.unlabelled), 16 if smoke else 512),
             "finetune": _batch(train_images, 16 if smoke else 256)}
    coco_root = f"{coco.resolve()}" if coco else None
    lines = f"""\
# The `{name}` preset: SparK on your own images, written by `spark new-preset` on {datetime.date.today()}
# ({scale} scale{': every stage at toy size, to check your folders and the DAG; numbers from it mean nothing' if smoke
  else ''}).
#   unlabelled: {unlabelled.resolve()} ({len(folders.unlabelled):,} images at any depth; other files ignored)
#   labelled:   {labelled.resolve()} ({len(classes)} classes, {len(folders.labelled_images()):,} images, {split})
#   image sizes: shorter side {min(inspection.short_sides)}-{max(inspection.short_sides)} px, median \
{inspection.median_side} (a sample of {len(inspection.short_sides)}): input {size} px, a {size // STRIDE}x\
{size // STRIDE} mask grid
# The question it answers: does SparK pretraining on your unlabelled images beat, on your labels, training from
# scratch and the supervised ImageNet weights you would use otherwise? Every arm is fine-tuned with the same seeds
# (paired); REPORT.md gives each difference with its 95% interval and a verdict, and reconstructions of your images.
{_comment(why)}
# Run it (`spark prepare --params {out}` alone first lists every unreadable image):
#   snakemake --cores all --configfile {out}
#   cp {out} params.yaml && dvc repro
# Keys are documented where each section's dataclass lives (see params.yaml's header); bad values fail up front.

preset: {name}
seeds: {SEEDS[scale]}              # one fine-tuning per seed and arm; pairs of arms share a seed
pretrain_seed: 0
label_regimes:
  all: {{}}                        # every label; add e.g. `low: {{label_fraction: 0.1}}` for a 10 % column
ablation_regimes: {'[all]' if ablation else '[]'}
models:
  {arch}: {{}}
ablation_models: {f'[{arch}]' if ablation else '[]'}               # SparK's zero-outing ablation (--ablation)
detection_models: {f'[{arch}]' if coco else '[]'}              # Mask R-CNN on your COCO data (--coco)
supervised_models: {f'[{arch}]' if source else '[]'}             # fine-tuning from finetune.supervised_weights
ablations:{' {zero_out: {encoder_mode: zero_out}}' if ablation else ' {}'}

data:
  root: {root}
  seed: 0                         # also draws the train/val split of your labelled classes
  workers: {min(8, os.cpu_count() or 1)}
  classification: own
  detection: {'coco' if coco else 'none'}
  own:
    unlabelled: {unlabelled.resolve()}
    labelled: {labelled.resolve()}
    val_fraction: {val_fraction}             # of each class, when labelled/ has no train/ and val/
    bad_images: skip              # unreadable files: skip (prepare lists them and leaves them out) or stop
{f'''  coco: {{root: {coco_root}, check_images: 50}}
''' if coco else ''}
pretrain:
  data: {root}/own/{OWN_UNLABELLED}   # the unlabelled images that decode (prepare writes the list)
  vis_data: {root}/own/val        # reconstructions of your own held-out images
  vis_images: {4 if smoke else 8}
  knn_data: {root}/own            # the k-NN monitor on your labels
  knn_every: {1 if smoke else max(1, epochs['pretrain'] // 10)}
  input_size: {size}
  mask_ratio: 0.6
  decoder_width: {64 if smoke else 512}
  epochs: {epochs['pretrain']}
  warmup_epochs: {0 if smoke else min(40, epochs['pretrain'] // 10)}
  global_batch: {batch['pretrain']}
  base_lr: {0.4 if smoke else 2e-4}
  precision: auto
  compile: auto
  num_workers: {1 if smoke else min(8, os.cpu_count() or 1)}

finetune:
  data: {root}/own                # train/ and val/ of your labels
  recipe: {finetune_recipe(arch)}              # the authors' recipe; the keys below override it
  supervised_weights: {source or 'own'}
  input_size: {size}
  global_batch: {batch['finetune']}
  epochs: {epochs['finetune']}
  warmup_epochs: {0 if smoke else min(5, epochs['finetune'] // 10)}
  precision: auto
  num_workers: {1 if smoke else min(8, os.cpu_count() or 1)}
{'''  base_lr: 0.128
  mixup: 0.0
  erase_prob: 0.0
  drop_path_rate: 0.0
  ema_decay: 0.9
''' if smoke else ''}
motivation:                       # zero-outing vs sparse encoding, measured on your held-out images
  data: {root}/own/val
  images: {16 if smoke else 256}
  batch: {8 if smoke else 32}
  bn_layers: {2 if smoke else 3}
  bootstrap: {200 if smoke else 1000}
{_detection(coco, arch, size, smoke) if coco else ''}
{_resources(smoke, budget_hours)}"""
    return lines


def _comment(text: str) -> str:
    return "\n".join(textwrap.wrap(text, 116, initial_indent="# ", subsequent_indent="#   ", break_long_words=False,
                                    break_on_hyphens=False))


def _resources(smoke: bool, budget_hours: float) -> str:
    """Threads (and a GPU where there is one) per job, and time limits: a training job may take the whole budget
    (a run stopped at its limit resumes in the next job)."""
    threads = 1 if smoke else os.cpu_count() or 1  # smoke: tiny jobs, run side by side
    gpus = "" if smoke or not _has_gpu() else ", gpus: 1"
    training = 10 if smoke else math.ceil(budget_hours * 60)
    limits = {"prepare": 10 if smoke else 120, "pretrain": training, "finetune": training,
              "detection": training, "motivation": 10 if smoke else 60, "report": 10}
    lines = ["# Per job: torch threads, memory (MB), runtime (minutes: its time limit), GPUs", "resources:"]
    for stage, minutes in limits.items():
        device = gpus if stage in ("pretrain", "finetune", "detection") else ""
        lines.append(f"  {stage}: {{threads: {threads}, mem_mb: 4000, runtime: {minutes}{device}}}")
    return "\n".join(lines) + "\n"


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _batch(images: int, largest: int) -> int:
    """A power of two near a tenth of the images (>= 16, at most ``largest``: ten steps an epoch where the images
    allow), never more than the images (and >= 2: fine-tuning's Mixup pairs them)."""
    batch = min(largest, max(16, 2 ** int(math.log2(max(1, images // 10)))))
    while batch > max(images, 2):
        batch //= 2
    return batch


def _detection(coco: Path, arch: str, size: int, smoke: bool) -> str:
    train = coco2017_split(coco, "train")
    recipe = "convnext_base" if arch.startswith("convnext") else "resnet50"
    return f"""
detection:                        # Mask R-CNN on your COCO-format data
  recipe: {recipe}                # the authors' COCO recipe; the keys below override it
  data_root: {coco.resolve()}
  train_json: {train.annotations.relative_to(coco)}
  train_images: {train.images.name}
  val_json: {coco2017_split(coco, 'val').annotations.relative_to(coco)}
  val_images: {coco2017_split(coco, 'val').images.name}
  supervised_weights: own          # detection's supervised arm: this DAG's classifier on your labels
  min_size_train: [{size}]
  max_size_train: {2 * size}
  min_size_test: {size}
  max_size_test: {2 * size}
  batch_size: {2 if smoke else 16}
  max_iter: {6 if smoke else 5000}
  steps: [{4 if smoke else 4000}]
  warmup_iters: {2 if smoke else 500}
  checkpoint_period: {3 if smoke else 1000}
  num_workers: {0 if smoke else 4}
"""


def new_preset(unlabelled: Path, labelled: Path, out: Path, *, coco: Path | None = None, arch: str = "resnet50",
               budget_hours: float = 24.0, supervised: str | None = None, ablation: bool = False,
               scale: str = "run") -> dict[str, Any]:
    """Inspect the folders, write the preset to ``out`` and return it (validated as the DAG will read it)."""
    from eval.pipeline.stages import validate

    if not timm.is_model(arch):
        raise ConfigError(f"--arch: unknown timm architecture {arch!r}")
    finetune_recipe(arch)
    if coco is not None and not all(coco2017_split(coco, s).annotations.is_file() for s in ("train", "val")):
        raise DataError(f"{coco}: expected COCO layout annotations/instances_{{train,val}}2017.json with "
                        "train2017/ and val2017/")
    inspection = inspect(unlabelled, labelled)
    arm = supervised_arm(arch, supervised)
    name = out.stem
    args = (out, name, arch, inspection, unlabelled, labelled, coco, arm, ablation, scale, budget_hours)
    text = preset_text(*args, epochs={"pretrain": 1, "finetune": 1})
    validate(yaml.safe_load(text))
    if scale == "run":
        text = preset_text(*args, epochs=budget_epochs(budget_hours, *_epoch_hours(yaml.safe_load(text))))
    params = yaml.safe_load(text)
    validate(params)  # written only once the DAG accepts it
    write_text(out, text)
    return params


def _epoch_hours(params: dict[str, Any]) -> tuple[float, float]:
    """Device-hours of one epoch of every pretraining, and of every fine-tuning, timed here as ``spark estimate``
    times a job: a few steps on synthetic inputs at the preset's size."""
    import torch

    from eval.estimate import time_job, plan

    jobs, sizes = plan(params)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hours = {}
    for stage in ("pretrain", "finetune"):
        stage_jobs = [job for job in jobs if job.stage == stage]
        print(f"new-preset: timing a {stage} step on {device}", file=sys.stderr, flush=True)
        timing = time_job(stage_jobs[0], device, 32 if device.type == "cuda" else 2, sizes)
        per_epoch = sizes.pretrain if stage == "pretrain" else sizes.labelled
        hours[stage] = timing.seconds_per_image * per_epoch * len(stage_jobs) / 3600
    return hours["pretrain"], hours["finetune"]
