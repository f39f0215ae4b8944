"""End-to-end fine-tuning runs on tiny generated image folders (CPU): outputs, learning, resume, DDP, CLI."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from eval.arms import SCRATCH
from eval.cli import main as spark_cli
from eval.finetune import FinetuneConfig, build_classifier, finetune
from eval.finetune.data import batch_mixer, eval_transform, train_transform
from eval.finetune.loss import build_criterion
from eval.finetune.optim import build_optimizer
from eval.pipeline.params import load_params
import spark.engine.run as run_module
from spark.model import SparKConfig, build_spark
from spark.config import ConfigError
from spark.engine import DistEnv, seed_all, set_epoch, train_loader
from spark.engine.step import apply_lr_wd, warmup_cosine
from spark.images import image_folders
from spark.io import load_torch, save_torch
from helpers import (
    assert_same_weights, assert_steps_match_one_process, counting_reads, kill_after_first_checkpoint,
    record_train_steps, run_two_gloo_ranks, single_threaded,
)

pytestmark = pytest.mark.usefixtures("isolated_run")

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 220, 40)]


def write_colour_folder(root: Path, per_class: int, size: int = 32, seed: int = 0) -> Path:
    """An ImageFolder whose classes are solid colours under pixel noise: trivially separable."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", per_class // 4)):
        for label, colour in enumerate(COLOURS):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    return write_colour_folder(tmp_path_factory.mktemp("data") / "colours", 8)


def section(data: Path, **changes) -> dict:
    """test_resnet (0.4 M parameters) at 32 px, the ResNet-50 recipe with every augmentation on, shrunk to 4
    iterations of 8 images per epoch."""
    return {"data": str(data), "arch": "test_resnet", "recipe": "resnet50", "input_size": 32, "global_batch": 8,
            "epochs": 3, "warmup_epochs": 1, "base_lr": 0.05, "mixup": 0.8, "drop_path_rate": 0.1,
            "ema_decay": 0.99, "ema_warmup": True, "num_workers": 0, "deterministic": True, **changes}


def tiny(data: Path, **changes):
    return FinetuneConfig.parse({"finetune": section(data, **changes)})


def write_params(path: Path, data: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({"finetune": section(data, **changes)}))
    return path


def checkpoint(run_dir: Path) -> dict:
    return load_torch(run_dir / "checkpoint.pth")


def test_run_directory_contents(colours, tmp_path):
    run = tmp_path / "run"
    finetune(tiny(colours), run)
    assert {p.name for p in run.iterdir()} == {"checkpoint.pth", "metrics.json", "dvclive", "config.yaml", "train.log",
                                               "run.json", "encoder.pth"}
    state = checkpoint(run)
    trunk = torch.load(run / "encoder.pth", weights_only=True)  # the final model without its head, not the EMA
    assert set(trunk) == {k for k in state["model"] if not k.startswith("fc.")} and "fc.weight" in state["model"]
    assert all(torch.equal(v, state["model"][k]) for k, v in trunk.items())
    assert state["epoch"] == 3 and len(state["history"]) == 3 and state["init"] == "scratch"
    assert state["config"] == yaml.safe_load((run / "config.yaml").read_text())
    assert state["model"].keys() == state["ema"].keys()
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"epoch", "loss", "lr", "grad_norm", "img_per_s", "top1", "top5", "ema_top1", "ema_top5",
                            "best_top1", "best_top5", "best_epoch", "best_model", "init", "load_report", "num_classes"}
    assert (metrics["epoch"], metrics["init"], metrics["num_classes"]) == (3, "scratch", 4)
    assert metrics["load_report"] is None
    best = state["history"][metrics["best_epoch"] - 1]
    assert metrics["best_top1"] == max(best["top1"], best["ema_top1"]) == max(
        max(r["top1"], r["ema_top1"]) for r in state["history"])
    assert len((run / "dvclive/plots/metrics/ema_top1.tsv").read_text().splitlines()) == 1 + 3
    assert "epoch 3/3  loss" in (run / "train.log").read_text()
    assert json.loads((run / "run.json").read_text())["init"] == "scratch"

    finished = (run / "checkpoint.pth").stat().st_mtime_ns
    finetune(tiny(colours), run)  # the same command again: nothing left to do
    assert (run / "checkpoint.pth").stat().st_mtime_ns == finished
    with pytest.raises(ConfigError, match="different values of epochs"):
        finetune(tiny(colours, epochs=4), run)
    with pytest.raises(ConfigError, match="different values of init"):
        finetune(tiny(colours), run, "other.pth")


def test_resnet18_learns_solid_colour_classes(tmp_path):
    data = write_colour_folder(tmp_path / "colours", 32, seed=1)
    config = tiny(data, arch="resnet18", global_batch=16, mixup=0.1, drop_path_rate=0.05, ema_decay=0.9)
    finetune(config, tmp_path / "run")  # 24 LAMB steps, the ResNet-50 recipe's augmentation and mixing
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["top1"] >= 70, metrics  # chance: 25
    assert metrics["best_top1"] >= metrics["top1"]


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(colours, tmp_path):
    finetune(tiny(colours, epochs=5), tmp_path / "uninterrupted")

    params = write_params(tmp_path / "params.yaml", colours, epochs=5)
    job = ["finetune", "--params", str(params), "--init", "scratch", "--out", str(tmp_path / "killed")]
    killed_at, resumed = kill_after_first_checkpoint(job, tmp_path / "killed")
    assert killed_at == 1  # stopped right after its first checkpoint
    assert f"resuming {tmp_path / 'killed'} after epoch {killed_at}/5" in resumed.stderr
    uninterrupted, killed = checkpoint(tmp_path / "uninterrupted"), checkpoint(tmp_path / "killed")
    assert_same_weights(uninterrupted["model"], killed["model"])
    assert_same_weights(uninterrupted["ema"], killed["ema"])
    assert uninterrupted["history"] == [{**r, "img_per_s": u["img_per_s"]} for u, r in
                                        zip(uninterrupted["history"], killed["history"])]
    rows = (tmp_path / "killed/dvclive/plots/metrics/top1.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in rows[1:]] == ["1", "2", "3", "4", "5"]


RANK_SCRIPT = """
import os, sys, torch
import eval.finetune.trainer as trainer
from eval.finetune import FinetuneConfig, finetune
from eval.pipeline.params import load_params
from helpers import record_train_steps
torch.set_num_threads(1)
steps = record_train_steps()
scored = []
score = trainer.topk_accuracy
def topk_accuracy(model, loader, *args, **kwargs):  # the validation images this rank scores
    scored.append(torch.cat([images for images, _ in loader]))
    return score(model, loader, *args, **kwargs)
trainer.topk_accuracy = topk_accuracy
model = finetune(FinetuneConfig.parse(load_params(sys.argv[1])), sys.argv[2])
torch.save({"steps": steps, "params": {k: v.detach() for k, v in model.named_parameters()},
            "state": model.state_dict(), "scored": scored}, f"{sys.argv[2]}/rank{os.environ['RANK']}.pt")
"""


def fingerprints(images: torch.Tensor) -> list[bytes]:
    """Which images a batch holds (as a multiset), whatever their order."""
    return sorted(hashlib.sha1(x.numpy().tobytes()).digest() for x in images)


def labelled_fingerprints(images: torch.Tensor, targets: torch.Tensor) -> list[tuple[bytes, int]]:
    """Which (image, class) pairs a batch holds (as a multiset), whatever their order; soft targets count as
    their largest class."""
    labels = targets.argmax(-1) if targets.dim() == 2 else targets
    return sorted((hashlib.sha1(x.numpy().tobytes()).digest(), int(y)) for x, y in zip(images, labels))


def test_two_gloo_ranks_step_like_one_process_on_the_global_batch(colours, tmp_path, request):
    """2 gloo ranks x 4 images (micro-batches of 2) against one process on the same 8 images per step, for 8 LAMB
    steps: the ranks split each global batch (repeated augmentation on, as in the ConvNeXt recipes: an image's
    copies spread over the ranks, each with its own draws); from the ranks' weights one process gets their loss
    and gradients (of the mean over the global batch, BN statistics per rank and micro-batch as on gloo); each step
    takes the ranks to the weights a one-process LAMB step gives; the ranks end with equal weights and BN statistics;
    and each evaluation scores every validation image exactly once. Mixup and drop-path off: their draws are per
    rank by design and cannot be replayed by one process."""
    params = write_params(tmp_path / "params.yaml", colours, epochs=2, micro_batch=2, mixup=0.0, drop_path_rate=0.0,
                          aug_repeats=3, precision="fp32", deterministic=False)
    config = FinetuneConfig.parse(load_params(params))
    ranks = run_two_gloo_ranks(RANK_SCRIPT, params, tmp_path / "run")
    single_threaded(request)
    assert "4 per rank, micro-batches of 2" in (tmp_path / "run" / "train.log").read_text()
    steps = list(zip(*(r["steps"] for r in ranks)))
    assert len(steps) == 2 * 4 and all(len(r["batch"][0]) == 4 for step in steps for r in step)

    # The data: at every step the two ranks hold, between them, exactly the 8 (image, class) pairs one process loads.
    train_set, val_set = image_folders(
        config.data, train_transform(config.input_size, config.augment, config.erase_prob, config.crop_scale),
        eval_transform(config.input_size, config.eval_crop), "finetune.data")
    one = train_loader(train_set, batch_size=8, env=DistEnv(), seed=config.seed, num_workers=0,
                       repeats=config.aug_repeats)
    batches = []
    for epoch in (1, 2):
        set_epoch(one, epoch)
        batches += list(one)
    for i, (step, (images, labels)) in enumerate(zip(steps, batches)):
        held = labelled_fingerprints(torch.cat([r["batch"][0] for r in step]), torch.cat([r["batch"][1] for r in step]))
        assert held == labelled_fingerprints(images, labels), f"step {i + 1}"

    # The reference: one process with the same initial weights, schedule and optimizer, step by step.
    seed_all(config.seed)
    model, _ = build_classifier(config.arch, len(COLOURS), config.drop_path_rate, SCRATCH)
    optimizer = build_optimizer(model, config.optimizer, config.peak_lr, config.weight_decay, config.layer_decay)
    criterion = build_criterion(config.loss_name)
    mixer = batch_mixer(len(COLOURS), mixup=0.0, cutmix=config.cutmix, switch_prob=config.mix_switch_prob,
                        smoothing=config.label_smoothing)

    def global_batch_loss(step: list[dict]) -> torch.Tensor:
        """The mean loss over the 8 images; BatchNorm over each rank's micro-batch of 2, as the ranks ran it."""
        logits, targets = [], []
        for r in step:
            images, soft = r["batch"]
            assert torch.equal(soft, mixer(images.clone(), soft.argmax(-1))[1])  # label smoothing only
            logits += [model(chunk) for chunk in images.split(config.micro_batch)]
            targets.append(soft)
        return criterion(torch.cat(logits), torch.cat(targets))

    iters, total = 4, 8
    assert_steps_match_one_process(
        ranks, model, optimizer, global_batch_loss,
        lambda i: apply_lr_wd(optimizer, warmup_cosine(i, config.peak_lr, config.warmup_epochs * iters, total),
                              config.weight_decay), config.clip)
    assert_same_weights(ranks[0]["state"], ranks[1]["state"])  # BN statistics too: averaged before evaluating

    # Evaluation: every evaluation (model and EMA, each epoch) scores each validation image exactly once over the
    # two ranks. (Comparing the accuracies with one process's could not fail here: after 8 steps every image is
    # misclassified, on any shard.)
    assert len(checkpoint(tmp_path / "run")["history"]) == 2
    whole = fingerprints(torch.stack([image for image, _ in val_set]))
    assert len(ranks[0]["scored"]) == len(ranks[1]["scored"]) == 2 * 2
    for i, shards in enumerate(zip(*(r["scored"] for r in ranks))):
        assert fingerprints(torch.cat(shards)) == whole, f"evaluation {i + 1}"


def cli(argv: list[str]) -> int:
    return spark_cli(["finetune", *argv])


def test_cli_from_our_encoder_and_its_errors(colours, tmp_path, capsys):
    encoder = tmp_path / "encoder.pth"
    model = build_spark(SparKConfig(arch="test_resnet", input_size=64, decoder_width=64))
    save_torch(model.encoder_state_dict(), encoder)
    params = write_params(tmp_path / "params.yaml", colours)
    assert cli(["--params", str(params), "--init", str(encoder), "--out", str(tmp_path / "bad"),
                "finetune.layer_decay=1.5"]) == 2
    assert "finetune.layer_decay: must be in (0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    with counting_reads(params) as reads:
        assert cli(["--params", str(params), "--init", str(encoder), "--out", str(tmp_path / "run"),
                    "finetune.epochs=2"]) == 0
    assert len(reads) == 1, reads  # the job reads its params once
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["epoch"], metrics["init"]) == (2, str(encoder))
    assert metrics["load_report"] == {"layout": "timm", "missing": ["fc.bias", "fc.weight"], "ignored": []}
    assert "left as initialised: fc.bias, fc.weight" in (tmp_path / "run" / "train.log").read_text()

    assert cli(["--params", str(params), "--init", str(encoder), "--out", str(tmp_path / "wrong"),
                "finetune.arch=resnet18"]) == 2
    assert "checkpoint does not fit 'resnet18'" in capsys.readouterr().err


def test_label_fraction_and_eval_every(colours, tmp_path):
    run = tmp_path / "run"
    finetune(tiny(colours, label_fraction=0.5, eval_every=2, mixup=0.0), run)
    history = load_torch(run / "checkpoint.pth")["history"]
    assert ["top1" in record for record in history] == [False, True, True]  # epochs 2 and 3 (the last)
    assert ": 2 iterations/epoch" in (run / "train.log").read_text()  # 16 of the 32 training images, batch 8
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] in (2, 3) and metrics["top1"] == history[-1]["top1"]


def test_the_two_arms_of_a_seed_differ_only_in_the_encoder_init(colours, tmp_path, monkeypatch):
    """Scratch against SparK init is a paired comparison: within a seed both arms train on the same label split
    (half the images: one epoch of 2 steps is all of it), in the same order, with the same augmentation and mixing
    draws, from the same head; only the encoder starts elsewhere (the checkpoint's weights)."""
    encoder = tmp_path / "encoder.pth"
    torch.manual_seed(1)  # any weights but the scratch arm's
    save_torch(build_spark(SparKConfig(arch="test_resnet", input_size=64, decoder_width=64)).encoder_state_dict(),
               encoder)
    monkeypatch.setattr(run_module, "train_step", run_module.train_step)  # restored after the test
    steps = record_train_steps()
    config = tiny(colours, epochs=1, warmup_epochs=0, label_fraction=0.5)
    finetune(config, tmp_path / "scratch")
    scratch, steps[:] = list(steps), []
    finetune(config, tmp_path / "spark", encoder)
    assert len(scratch) == len(steps) == 2

    for i, (a, b) in enumerate(zip(scratch, steps)):  # mixed images and soft targets
        assert all(map(torch.equal, a["batch"], b["batch"])), f"step {i + 1}: the arms' batches differ"
    start_a, start_b = scratch[0]["weights"], steps[0]["weights"]
    head = set(json.loads((tmp_path / "spark/metrics.json").read_text())["load_report"]["missing"])
    assert head and head < start_a.keys()
    assert_same_weights({k: start_a[k] for k in head}, {k: start_b[k] for k in head})
    loaded = load_torch(encoder)
    body = start_b.keys() - head
    assert_same_weights({k: start_b[k] for k in body}, {k: loaded[k] for k in body})
    kernels = [k for k in body if start_a[k].dim() == 4]
    assert kernels and not any(torch.equal(start_a[k], start_b[k]) for k in kernels), "the encoders must differ"


def test_micro_batch_auto_probes_mixed_batches_and_trains_as_the_size_it_chose(colours, tmp_path, monkeypatch):
    """The probe runs passes shaped like training's (mixed images, soft targets) and leaves no trace: out of memory
    above 3 images, a run with auto picks ceil(8 / 4) = 2 and ends where one told micro_batch: 2 ends."""
    import eval.finetune.trainer as trainer_module

    real, passes = trainer_module.Finetuner.model_loss, []

    def model_loss(self, model, batch):
        images, targets = batch
        passes.append((len(images), targets.shape))
        if len(images) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, model, batch)

    monkeypatch.setattr(trainer_module.Finetuner, "model_loss", model_loss)
    finetune(tiny(colours, epochs=1, warmup_epochs=0, micro_batch="auto"), tmp_path / "auto")
    assert [size for size, _ in passes[:3]] == [8, 4, 2] and passes[0][1] == (8, len(COLOURS))  # soft targets
    assert json.loads((tmp_path / "auto/run.json").read_text())["micro_batch"] == 2
    finetune(tiny(colours, epochs=1, warmup_epochs=0, micro_batch=2), tmp_path / "explicit")
    assert_same_weights(checkpoint(tmp_path / "auto")["model"], checkpoint(tmp_path / "explicit")["model"])
