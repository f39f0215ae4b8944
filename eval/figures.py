"""The report's figures: pretraining loss curves of every variant, and reconstructions side by side."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from .tables import Run  # noqa: E402

LOSS_CURVE = Path("dvclive/plots/metrics/loss.tsv")


def loss_curves(pretrain: list[Run], out: Path) -> None:
    """Per-epoch masked reconstruction loss of each pretraining run on one plot."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in pretrain:
        curve = pd.read_csv(run.path / LOSS_CURVE, sep="\t")
        label = f"{run.branch.model} {run.branch.init}" + (f" (seed {run.branch.seed})" if run.branch.seed else "")
        ax.plot(curve["step"], curve["loss"], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction loss (masked patches)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def reconstruction_grid(pretrain: list[Run], out: Path) -> None:
    """Each variant's ``reconstruction.png`` (first seed), stacked with its name."""
    runs = [r for r in pretrain if r.branch.seed == min(x.branch.seed for x in pretrain)]
    images = [Image.open(r.path / "reconstruction.png").convert("RGB") for r in runs]
    fig, axes = plt.subplots(len(images), 1, figsize=(8, 2.2 * len(images)), squeeze=False)
    for ax, run, image in zip(axes[:, 0], runs, images):
        ax.imshow(image)
        ax.set_title(f"{run.branch.model} {run.branch.init}: input | masked | reconstruction | visible pasted", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
