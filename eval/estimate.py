"""``spark estimate``: what a preset costs in device-hours, from a few timed training steps of its jobs here.

    spark estimate --params configs/paper.yaml [--batch N] [--json PATH] [key.path=value ...]

The jobs are the DAG's (:mod:`eval.pipeline.dag`: pretraining per model and variant, fine-tuning per model,
label regime, init and seed, detection per model, init and seed). Each costs

    device-hours = seconds per image x images its whole schedule trains on / 3600

where Detectron2's schedule is ``max_iter`` iterations of ``batch_size`` images. Seconds per image come from
the job's own training step (model, optimizer, loss, precision and compile decision as its run resolves them on
this device, on synthetic inputs at the preset's input size) at a small per-device batch; jobs that differ only
in seed or init share one timing. Hours on a job's ``resources.<stage>.gpus`` devices assume linear scaling:
each keeps this device's per-image speed. Not counted: data loading, evaluation and checkpoints. The hours lean
high: at the preset's larger per-device batch a device is busier, and the optimizer's per-step work is spread over
more images, than at the timed batch.
"""
from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from eval.data.config import FASHION_MNIST_CLASSES, DataConfig
from eval.data.own import scan_folders
from eval.data.paths import NO_DETECTION, classification_data, detection_data
from eval.detection.config import DetectionConfig
from eval.finetune.config import FinetuneConfig
from eval.pipeline.params import branch_config
from eval.pipeline.dag import Layout, layout
from eval.pipeline.stages import STAGES, validate
from eval.pipeline.resources import stage_resources
from spark.config import ConfigError, Section, to_dict
from spark.engine import Compilation, Precision, retain_freed_memory, set_deterministic, train_step
from spark.provenance import hardware
from spark.pretrain.config import PretrainConfig

WARMUP_STEPS = 1  # the first step also compiles, where the run compiles
TIMED_STEPS = 3  # their median: one step disturbed by other load does not count
TIMING_BATCH = {"cuda": 32, "cpu": 1}  # per-device batch timed (the preset's if smaller; fine-tuning: >= 2)
IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1K train, COCO train2017: the sizes when the data is not prepared
COCO_TRAIN_IMAGES = 118_287
COCO_CLASSES = 80
OBJECTS_PER_IMAGE = 7  # COCO train2017 averages 7.3 annotated instances per image
SCALING = ("linear scaling: each of a job's devices trains at this device's per-image speed, measured at the "
           "timed per-device batch (larger batches are faster per image, so the hours lean high)")


@dataclass(frozen=True)
class DataSizes:
    """The training images each stage draws from, and where each count comes from."""

    pretrain: int
    labelled: int  # fine-tuning's training images, all labels
    classes: int
    detection: int
    detection_classes: int
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Job:
    """One training job of the DAG and the work its whole schedule does."""

    stage: str  # pretrain, finetune or detection
    run: str  # its run directory, as the workflow names it
    config: Section
    devices: int  # resources.<stage>.gpus, at least one device
    images: int  # over all devices
    steps: int  # optimizer steps (iterations): what compile: auto decides on

    @property
    def device_batch(self) -> int:
        batch = self.config.batch_size if self.stage == "detection" else self.config.global_batch
        return batch // self.devices

    @property
    def recipe(self) -> str:
        """What its step's cost depends on: the stage and its section without the seed (the init is not in it)."""
        section = {key: value for key, value in to_dict(self.config).items() if key != "seed"}
        return json.dumps({"stage": self.stage, **section}, sort_keys=True)


@dataclass(frozen=True)
class Timing:
    seconds_per_image: float
    batch: int  # per-device batch timed
    setting: str  # precision and compile decision, e.g. "bf16 + channels_last, eager"


def data_sizes(params: dict[str, Any]) -> DataSizes:
    """Image counts: the mini benchmark's from its ``data`` section (what prepare generates), ImageNet's and
    COCO's from their prepared manifests, else their published sizes."""
    data = DataConfig.parse(params)
    if data.classification == "mini-in":
        mini = data.mini_in
        labelled = mini.classes * mini.train_per_class
        pretrain, classes = mini.classes * mini.unlabeled_per_class or labelled, mini.classes
        classification = f"mini-in: {pretrain:,} pretraining, {labelled:,} labelled images (data.mini_in)"
    elif data.classification == "own":
        pretrain, labelled, classes = own_sizes(data)
        classification = (f"your folders: {pretrain:,} pretraining, {labelled:,} labelled training images, "
                          f"{classes} classes")
    else:
        labelled, classification = _prepared(classification_data(data).manifest, ("train",),
                                              IMAGENET_TRAIN_IMAGES, "ImageNet-1K train")
        pretrain, classes = labelled, data.imagenet.classes
    if data.detection == "mini-coco":
        detection, detection_classes = data.mini_coco.train_images, FASHION_MNIST_CLASSES
        detection_source = f"mini-coco: {detection:,} training images (data.mini_coco)"
    elif data.detection == NO_DETECTION:
        detection, detection_classes, detection_source = 0, 0, "no detection data (data.detection: none)"
    else:
        detection, detection_source = _prepared(detection_data(data).manifest, ("train", "images"),
                                                COCO_TRAIN_IMAGES, "COCO train2017")
        detection_classes = COCO_CLASSES
    return DataSizes(pretrain, labelled, classes, detection, detection_classes, (classification, detection_source))


def own_sizes(data: DataConfig) -> tuple[int, int, int]:
    """Unlabelled images, labelled training images and classes of your own folders: as prepared (readable images,
    after the split), else as listed."""
    manifest = classification_data(data).manifest
    if manifest.is_file():
        layout = json.loads(manifest.read_text())["layout"]
        return layout["unlabelled"], layout["train"], len(layout["classes"])
    folders = scan_folders(data.own)
    return len(folders.unlabelled), folders.training_images(data.own.val_fraction), len(folders.classes)


def _prepared(manifest: Path, keys: tuple[str, ...], known: int, name: str) -> tuple[int, str]:
    """The training images a prepared ``manifest`` counts, else the dataset's published size; and the source."""
    if not manifest.is_file():
        return known, f"{name}: {known:,} images (its published size; {manifest} not prepared)"
    count = json.loads(manifest.read_text())["layout"]
    for key in keys:
        count = count[key]
    return count, f"{name}: {count:,} images ({manifest})"


def plan(params: dict[str, Any]) -> tuple[list[Job], DataSizes]:
    """Every training job of the (validated) params' DAG, with its work, and the data sizes behind it."""
    validate(params)
    sizes, runs = data_sizes(params), layout(params)
    jobs = []
    for branch in STAGES["pretrain"].branches(params):
        config = branch_config(params, PretrainConfig, model=branch.model, variant=branch.init)
        jobs.append(_epoch_job(params, "pretrain", runs.run("pretrain", branch), config, sizes.pretrain))
    for branch in STAGES["finetune"].branches(params):
        config = branch_config(params, FinetuneConfig, model=branch.model, regime=branch.regime)
        # label_split keeps max(1, round(fraction * n_c)) images of each class (ImageNet's classes: their mean)
        labelled = sizes.classes * max(1, round(config.label_fraction * sizes.labelled / sizes.classes))
        jobs.append(_epoch_job(params, "finetune", runs.run("finetune", branch), config, labelled))
    for branch in STAGES["detection"].branches(params):
        config = branch_config(params, DetectionConfig, model=branch.model)
        jobs.append(Job("detection", runs.run("detection", branch), config, _devices(params, "detection"),
                        config.max_iter * config.batch_size, config.max_iter))
    return jobs, sizes


def _epoch_job(params: dict[str, Any], stage: str, run: str, config: PretrainConfig | FinetuneConfig,
               images: int) -> Job:
    """An epoch-based job: as its run does, every epoch drops the last incomplete batch."""
    iters = images // config.global_batch
    if iters == 0:
        raise ConfigError(f"params: {stage}.global_batch: {config.global_batch} exceeds the {images} training images")
    return Job(stage, run, config, _devices(params, stage), config.epochs * iters * config.global_batch,
               config.epochs * iters)


def _devices(params: dict[str, Any], stage: str) -> int:
    """The devices one job of ``stage`` trains on: its GPUs per node (at least one device) times its nodes."""
    resources = stage_resources(params, stage)
    return max(resources.gpus, 1) * resources.nodes


def estimate(params: dict[str, Any], batch: int | None = None, source: str = "") -> dict[str, Any]:
    """Time each distinct job of ``params`` on this process's device (CUDA if available) at a per-device batch of
    at most ``batch`` (default :data:`TIMING_BATCH`), and cost every job: the JSON that ``--json`` writes."""
    jobs, sizes = plan(params)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = batch or TIMING_BATCH[device.type]
    if device.type == "cpu":
        retain_freed_memory()  # as the training commands do there
    recipes = list(dict.fromkeys(job.recipe for job in jobs))
    timings: dict[str, Timing] = {}
    for job in jobs:
        if job.recipe not in timings:
            print(f"estimate: timing {job.run} ({len(timings) + 1} of {len(recipes)})", file=sys.stderr, flush=True)
            timings[job.recipe] = time_job(job, device, batch, sizes)
    rows = [cost(job, timings[job.recipe], recipes.index(job.recipe)) for job in jobs]
    return {
        "params": str(source), "preset": params["preset"], "device": hardware(), "torch": torch.__version__,
        "max_batch": batch, "warmup_steps": WARMUP_STEPS, "timed_steps": TIMED_STEPS, "assumes": SCALING,
        "data": asdict(sizes), "jobs": rows, "distinct_timings": len(recipes),
        "total_device_hours": sum(row["device_hours"] for row in rows),
    }


def cost(job: Job, timing: Timing, index: int = 0) -> dict[str, Any]:
    """``job``'s row of the estimate: its work, its timing (the ``index``-th distinct one) and its hours."""
    device_hours = timing.seconds_per_image * job.images / 3600
    return {"stage": job.stage, "run": job.run, "timing": index, "setting": timing.setting,
            "timed_batch": timing.batch, "device_batch": job.device_batch, "devices": job.devices,
            "seconds_per_image": timing.seconds_per_image, "images": job.images, "steps": job.steps,
            "device_hours": device_hours, "hours": device_hours / job.devices}


def format_estimate(result: dict[str, Any]) -> str:
    """The printed form: what was timed how, the data sizes, a row per job and the total."""
    jobs, runs = result["jobs"], Layout(result["preset"]).runs
    lines = [
        f"spark estimate: preset {result['preset']} ({result['params']}) on {result['device']}, torch "
        f"{result['torch']}",
        f"timed: {result['distinct_timings']} distinct of {len(jobs)} jobs (the others differ only in seed or init), "
        f"{result['warmup_steps']} warm-up + {result['timed_steps']} timed steps each on synthetic inputs at the "
        f"preset's input size, per-device batch <= {result['max_batch']} (fine-tuning: >= 2, for Mixup); data "
        "loading, evaluation and checkpoints not counted",
        *(f"data: {source}" for source in result["data"]["sources"]),
        "",
        "| job | setting | batch per device: timed / run | s/img | images | device-hours | devices | hours on them |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for job in jobs:
        lines.append(f"| {job['run'].removeprefix(runs + '/')} | {job['setting']} | {job['timed_batch']} / "
                     f"{job['device_batch']} | {job['seconds_per_image']:.4g} | {job['images']:,} | "
                     f"{_hours(job['device_hours'])} | {job['devices']} | {_hours(job['hours'])} |")
    lines += [f"| total | | | | | {_hours(result['total_device_hours'])} | | |", "",
              f"device-hours = s/img x images / 3600 (detection: iterations x batch_size images); assumes "
              f"{result['assumes']}"]
    return "\n".join(lines)


def _hours(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def time_job(job: Job, device: torch.device, max_batch: int, sizes: DataSizes) -> Timing:
    """Median seconds per image of ``job``'s training step on ``device`` at a per-device batch <= ``max_batch``."""
    batch = min(job.device_batch, max_batch)
    if job.stage == "finetune":
        batch = max(2, batch - batch % 2)  # Mixup pairs each image with the batch reversed
    with _restored_backend_flags():
        step, setting = STEPS[job.stage](job, batch, device, sizes)
        for _ in range(WARMUP_STEPS):
            step()
        times = []
        for _ in range(TIMED_STEPS):
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    del step
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Timing(statistics.median(times) / batch, batch, setting)


@contextmanager
def _restored_backend_flags() -> Iterator[None]:
    """A job's deterministic mode (set as its run sets it) stays with the job."""
    deterministic, benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = benchmark


Step = Callable[[], None]


def _run_settings(job: Job, device: torch.device) -> tuple[Precision, Compilation]:
    """Precision and compile decision as the job's run resolves them (:class:`spark.engine.EpochTrainer`)."""
    config = job.config
    set_deterministic(config.deterministic)
    precision = Precision.resolve(config.precision, config.channels_last, device)
    return precision, Compilation.resolve(config.compile, job.steps, device, precision.name)


def _describe(precision: Precision, compilation: Compilation) -> str:
    return f"{precision.describe().split(' (')[0]}, {'compiled' if compilation.enabled else 'eager'}"


def _pretrain_step(job: Job, batch: int, device: torch.device, sizes: DataSizes) -> tuple[Step, str]:
    """:class:`spark.pretrain.trainer.Pretrainer`'s step: uint8 pixels to the device and normalised there, SparK
    under a fresh mask, LAMB, clipping."""
    from spark.model import build_spark
    from spark.pretrain.data import normalize
    from spark.pretrain.optim import build_optimizer

    config = job.config
    precision, compilation = _run_settings(job, device)
    model = precision.prepare_model(build_spark(config.model_config()).to(device))
    optimizer = build_optimizer(model, config)
    step_model = compilation.apply(model)
    pixels = torch.randint(0, 256, (batch, 3, config.input_size, config.input_size), dtype=torch.uint8)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return step_model(x, model.sample_visible(len(x), x.device))

    def step() -> None:
        images = normalize(precision.prepare_input(pixels, device))
        train_step(loss, optimizer, images, where="estimate", module=step_model, clip=config.clip or None,
                   precision=precision)

    return step, _describe(precision, compilation)


def _finetune_step(job: Job, batch: int, device: torch.device, sizes: DataSizes) -> tuple[Step, str]:
    """:class:`eval.finetune.trainer.Finetuner`'s step: the batch to the device, Mixup/CutMix, the classifier, its
    loss, the EMA update."""
    from timm.utils import ModelEmaV3

    from eval.finetune.data import batch_mixer
    from eval.finetune.loss import build_criterion
    from eval.finetune.model import build_classifier
    from eval.finetune.optim import build_optimizer

    config = job.config
    precision, compilation = _run_settings(job, device)
    model, _ = build_classifier(config.arch, sizes.classes, config.drop_path_rate)
    model = precision.prepare_model(model.to(device))
    ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=config.ema_warmup)
    optimizer = build_optimizer(model, config.optimizer, config.peak_lr, config.weight_decay, config.layer_decay)
    step_model = compilation.apply(model)
    criterion = build_criterion(config.loss_name)
    mixer = batch_mixer(sizes.classes, mixup=config.mixup, cutmix=config.cutmix, switch_prob=config.mix_switch_prob,
                        smoothing=config.label_smoothing)
    images = torch.randn(batch, 3, config.input_size, config.input_size)
    targets = torch.randint(sizes.classes, (batch,))

    def loss(inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return criterion(step_model(inputs[0]), inputs[1])

    def step() -> None:
        mixed = mixer(precision.prepare_input(images.clone(), device), targets.to(device))
        train_step(loss, optimizer, mixed, where="estimate", module=step_model, clip=config.clip or None,
                   precision=precision)
        ema.update(model)

    return step, _describe(precision, compilation)


def _detection_step(job: Job, batch: int, device: torch.device, sizes: DataSizes) -> tuple[Step, str]:
    """Detectron2's iteration (``SimpleTrainer.run_step``) with the project's model and optimizer, on 4:3 images
    at the median training scale with :data:`OBJECTS_PER_IMAGE` boxes and masks each."""
    from detectron2.utils.events import EventStorage

    from eval.detection.recipe import build_cfg
    from eval.detection.train import Trainer

    cfg = build_cfg(job.config, sizes.detection_classes, ".")  # the device: CUDA if available, as in its run
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    generator = torch.Generator().manual_seed(0)
    inputs = [_detection_input(job.config, sizes.detection_classes, generator) for _ in range(batch)]

    storage = EventStorage()  # where the model logs its training statistics

    def step() -> None:
        with storage:
            losses = sum(model(inputs).values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()

    return step, "fp32, eager"  # Detectron2 runs without AMP


def _detection_input(config: DetectionConfig, classes: int, generator: torch.Generator) -> dict[str, Any]:
    """One image of Detectron2's training input: the image after its resize, with boxes, classes and masks."""
    import numpy as np
    from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks

    short = sorted(config.min_size_train)[len(config.min_size_train) // 2]
    height, width = short, min(short * 4 // 3, config.max_size_train)
    extent = torch.tensor([width, height] * 2, dtype=torch.float)
    corner = torch.rand(OBJECTS_PER_IMAGE, 2, generator=generator) * 0.5
    boxes = torch.cat([corner, corner + 0.1 + 0.4 * torch.rand(OBJECTS_PER_IMAGE, 2, generator=generator)], 1) * extent
    instances = Instances((height, width), gt_boxes=Boxes(boxes),
                          gt_classes=torch.randint(classes, (OBJECTS_PER_IMAGE,), generator=generator))
    if config.mask_format == "bitmask":
        masks = torch.zeros(OBJECTS_PER_IMAGE, height, width, dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
            mask[y0:y1, x0:x1] = True
        instances.gt_masks = BitMasks(masks)
    else:
        instances.gt_masks = PolygonMasks([[np.array([x0, y0, x1, y0, x1, y1, x0, y1])]
                                           for x0, y0, x1, y1 in boxes.tolist()])
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    return {"image": image, "instances": instances, "height": height, "width": width}


STEPS: dict[str, Callable[[Job, int, torch.device, DataSizes], tuple[Step, str]]] = {
    "pretrain": _pretrain_step, "finetune": _finetune_step, "detection": _detection_step,
}
