"""End-to-end fine-tuning runs on tiny generated image folders (CPU): outputs, learning, resume, DDP, CLI."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from eval.finetune import finetune, parse_finetune
from eval.finetune.__main__ import main as cli
from spark import build_spark
from spark.config import ConfigError
from spark.io import load_torch, save_torch
from helpers import assert_same_weights, kill_after_first_checkpoint, run_two_gloo_ranks

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
    return parse_finetune({"finetune": section(data, **changes)})


def write_params(path: Path, data: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({"finetune": section(data, **changes)}))
    return path


def checkpoint(run_dir: Path) -> dict:
    return load_torch(run_dir / "checkpoint.pth")


def test_run_directory_contents(colours, tmp_path):
    run = tmp_path / "run"
    finetune(tiny(colours), run)
    assert {p.name for p in run.iterdir()} == {"checkpoint.pth", "metrics.json", "dvclive", "config.yaml", "train.log",
                                               "run.json"}
    state = checkpoint(run)
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
    command = [sys.executable, "-m", "eval.finetune", "--params", str(params), "--init", "scratch",
               "--out", str(tmp_path / "killed")]
    killed_at, resumed = kill_after_first_checkpoint(command, tmp_path / "killed")
    assert 1 <= killed_at < 5
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
from eval.finetune import finetune, load_finetune_config
torch.set_num_threads(1)
model = finetune(load_finetune_config(sys.argv[1]), sys.argv[2])
torch.save(model.state_dict(), f"{sys.argv[2]}/rank{os.environ['RANK']}.pt")
"""


def test_two_gloo_ranks_end_with_identical_weights(colours, tmp_path):
    params = write_params(tmp_path / "params.yaml", colours, epochs=2, micro_batch=2, deterministic=False)
    rank0, rank1 = run_two_gloo_ranks(RANK_SCRIPT, params, tmp_path / "run")
    assert_same_weights(rank0, rank1)
    assert "4 per rank, micro-batches of 2" in (tmp_path / "run" / "train.log").read_text()
    history = checkpoint(tmp_path / "run")["history"]
    assert len(history) == 2 and all(100 * r["top1"] % 12.5 == 0 for r in history)  # 8 val images over 2 ranks


def test_cli_from_our_encoder_and_its_errors(colours, tmp_path, capsys):
    encoder = tmp_path / "encoder.pth"
    save_torch(build_spark("test_resnet", 64, decoder_width=64).encoder_state_dict(), encoder)
    params = write_params(tmp_path / "params.yaml", colours)
    assert cli(["--params", str(params), "--init", str(encoder), "--out", str(tmp_path / "bad"),
                "finetune.layer_decay=1.5"]) == 2
    assert "finetune.layer_decay: must be in (0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    assert cli(["--params", str(params), "--init", str(encoder), "--out", str(tmp_path / "run"),
                "finetune.epochs=2"]) == 0
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
