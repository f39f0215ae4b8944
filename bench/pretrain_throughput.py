"""End-to-end pretraining throughput: images/s of real ``spark.pretrain`` runs, data loading included.

Each preset trains ``--epochs`` short epochs on ``--images`` images in a temporary run directory (checkpoint,
dvclive and reconstruction figure included, as in a real run). The table reports the last epoch's images/s
(workers warm) and what a full run of the preset would take on the whole image folder at that rate.

    python bench/pretrain_throughput.py                          # smoke and mini presets on data/mini-in/train
    python bench/pretrain_throughput.py --preset mini --images 640
    python bench/pretrain_throughput.py --params params.yaml --model resnet18   # a params file's pretrain section
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eval.pipeline.params import branch_config, load_params
from spark.io import load_torch
from spark.pretrain import PretrainConfig, pretrain
from spark.pretrain.data import list_images

REPO = Path(__file__).resolve().parents[1]
# The presets' own params files: the benchmark measures exactly what the DAG runs (first model of each).
PRESETS = {"smoke": REPO / "configs/smoke.yaml", "mini": REPO / "params.yaml"}


def preset_config(path: Path) -> PretrainConfig:
    params = load_params(path)
    return branch_config(params, PretrainConfig, model=next(iter(params["models"])))


def synthetic_images(root: Path, count: int, size: int = 128) -> Path:
    """PNG stand-ins of mini-in's size and content scale, for a checkout without ``spark prepare`` data."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(count):
        smooth = rng.normal(size=(size // 8, size // 8, 3)).repeat(8, 0).repeat(8, 1)
        pixels = np.clip(127.5 + 40 * smooth + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i:05d}.png")
    return root


def measure(name: str, config: PretrainConfig, images: list[Path], dataset_size: int, epochs: int,
            work: Path) -> dict[str, str]:
    """Run ``epochs`` epochs of ``config`` on ``images``; the full-run estimate uses ``config.epochs``."""
    manifest = work / f"{name}.txt"
    manifest.write_text("".join(f"{p}\n" for p in images))
    short = dataclasses.replace(config, data=str(manifest), vis_data=None, epochs=epochs, warmup_epochs=0,
                                save_every=epochs)
    start = time.perf_counter()
    pretrain(short, work / name)
    wall = time.perf_counter() - start
    rate = load_torch(work / name / "checkpoint.pth")["history"][-1]["img_per_s"]
    return {
        "preset": name, "arch": config.arch, "px": str(config.input_size), "batch": str(config.global_batch),
        "decoder": str(config.decoder_width),
        "precision": json.loads((work / name / "run.json").read_text())["precision"].split(" (")[0],
        "workers": str(config.num_workers), "img/s": f"{rate:.1f}", "bench wall s": f"{wall:.0f}",
        "full run min": f"{config.epochs * dataset_size / rate / 60:.1f} ({config.epochs} ep x {dataset_size})",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", action="append", choices=sorted(PRESETS), help="default: all presets")
    parser.add_argument("--params", type=Path, help="measure this params file's pretrain section instead")
    parser.add_argument("--model", help="with --params: merge models[MODEL].pretrain")
    parser.add_argument("--data", type=Path, default=Path("data/mini-in/train"),
                        help="image folder (default: data/mini-in/train; synthetic 128 px images if missing)")
    parser.add_argument("--images", type=int, default=320, help="images per measured epoch (default: 320)")
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs, the last reported (default: 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    if args.params:
        params = load_params(args.params)
        configs = {args.params.stem: branch_config(params, PretrainConfig, model=args.model)}
    else:
        configs = {name: preset_config(PRESETS[name]) for name in args.preset or PRESETS}
    data_dir = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix="spark-bench-") as tmp:
        work = Path(tmp)
        os.chdir(work)  # dvclive initialises a DVC repo in an enclosing git checkout that has none
        paths = list_images(data_dir if data_dir.is_dir() else synthetic_images(work / "images", args.images))
        rows = [measure(name, config, paths[: args.images], len(paths), args.epochs, work)
                for name, config in configs.items()]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads on {os.cpu_count()} cores; "
          f"{min(args.images, len(paths))} images per epoch from {data_dir if data_dir.is_dir() else 'synthetic'}")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in rows[0]}
    print("  ".join(c.ljust(w) for c, w in widths.items()))
    for row in rows:
        print("  ".join(row[c].ljust(w) for c, w in widths.items()))


if __name__ == "__main__":
    main()
