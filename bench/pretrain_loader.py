"""Pretraining data loader: images/s per worker, uint8 batches normalised on the device vs float batches.

What a GPU's feeders do in a paper run: decode real JPEGs (ImageNet-like, ~500x375), RandomResizedCrop to 224 px,
flip, and hand the batch to the training process. ``uint8`` is the pipeline's loader (workers stop at uint8 pixels,
:func:`spark.pretrain.data.normalize` runs on the batch in the training process); ``float`` is the reference's
(ToTensor + Normalize per image in the workers). Rounds alternate the two; each reports images/s per worker over
whole epochs, the training process's normalisation included, and the bytes of one batch that cross shared memory.

    python bench/pretrain_loader.py                      # 1 worker, 256 JPEGs made from photos scikit-image ships
    python bench/pretrain_loader.py --workers 2 --rounds 5 --data /datasets/imagenet/train
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms

from spark.engine import DistEnv, set_epoch, train_loader
from spark.engine.precision import native_bf16
from spark.pretrain.data import ImageFiles, collate_images, list_images, normalize, train_transform
from spark.provenance import hardware

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def make_jpegs(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs (quality 90) of ImageNet's typical size, random crops and rescales of real photos that
    scikit-image installs (no download)."""
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        crop = photo.crop((x, y, x + cw, y + ch)).resize((500, 375), Image.BICUBIC)
        crop.save(root / f"{i:05d}.jpg", quality=90)
    return root


def reference_transform(size: int) -> transforms.Compose:
    """The reference's per-image float pipeline: the same augmentation, then ToTensor + Normalize in the worker."""
    return transforms.Compose([*train_transform(size).transforms[:-1], transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])


def epoch_rate(loader, epoch: int, finish) -> tuple[float, int]:
    """Images/s of one epoch through ``loader`` (each batch passed to ``finish``), and one batch's bytes."""
    set_epoch(loader, epoch)
    start, images, nbytes = time.perf_counter(), 0, 0
    for batch, _ in loader:
        nbytes = batch.numel() * batch.element_size()
        finish(batch)
        images += len(batch)
    return images / (time.perf_counter() - start), nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an image folder (default: JPEGs made from scikit-image photos)")
    parser.add_argument("--images", type=int, default=256, help="images per epoch (default: 256)")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of one epoch each (default: 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the training process's share of the CPU in a node's 8 ranks

    with tempfile.TemporaryDirectory(prefix="spark-loader-") as tmp:
        paths = list_images(args.data) if args.data else list_images(make_jpegs(Path(tmp), args.images))
        paths = paths[: args.images]
        loaders = {
            name: train_loader(ImageFiles(paths, transform), batch_size=args.batch, env=DistEnv(), seed=0,
                               num_workers=args.workers, collate_fn=collate_images)
            for name, transform in (("uint8", train_transform(args.input_size)),
                                    ("float", reference_transform(args.input_size)))
        }
        finish = {"uint8": normalize, "float": lambda batch: batch}
        for name, loader in loaders.items():  # start the persistent workers outside the timed rounds
            epoch_rate(loader, 0, finish[name])
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        sizes = {}
        for epoch in range(1, args.rounds + 1):
            for name, loader in loaders.items():
                rate, sizes[name] = epoch_rate(loader, epoch, finish[name])
                rates[name].append(rate / args.workers)
    bf16 = "native bf16" if native_bf16(torch.device("cpu"))[0] else "no native bf16"
    print(f"# {hardware()}, {bf16}, torch {torch.__version__}; {len(paths)} images "
          f"{'from ' + str(args.data) if args.data else '(500x375 JPEGs of scikit-image photos)'}, "
          f"{args.input_size} px, batch {args.batch}, {args.workers} worker(s), {args.rounds} rounds")
    print("loader  img/s per worker (median, min-max)  MB per batch")
    for name, values in rates.items():
        print(f"{name:<6}  {statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"
              f"{'':17}{sizes[name] / 2**20:7.2f}")
    paired = [u / f for u, f in zip(rates["uint8"], rates["float"])]
    print(f"uint8/float per round: {', '.join(f'{r:.3f}' for r in paired)}")


if __name__ == "__main__":
    main()
