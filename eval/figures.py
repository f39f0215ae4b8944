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
    """Per-epoch pretraining loss of each run on one plot (each variant's own loss: ``loss_all`` averages over all
    patches, the others over masked patches only)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in pretrain:
        curve = pd.read_csv(run.path / LOSS_CURVE, sep="\t")
        label = f"{run.branch.model} {run.branch.init}" + (f" (seed {run.branch.seed})" if run.branch.seed else "")
        ax.plot(curve["step"], curve["loss"], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("pretraining loss (per-patch normalised MSE)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def reconstruction_grid(pretrain: list[Run], out: Path) -> None:
    """Each variant's ``reconstruction.png`` (first seed) side by side, titled with its name."""
    runs = [r for r in pretrain if r.branch.seed == min(x.branch.seed for x in pretrain)]
    fig, axes = plt.subplots(1, len(runs), figsize=(2.6 * len(runs), 5.6), squeeze=False)
    for ax, run in zip(axes[0], runs):
        with Image.open(run.path / "reconstruction.png") as image:
            ax.imshow(image.convert("RGB"))
        ax.set_title(f"{run.branch.model}\n{run.branch.init}", fontsize=9)
        ax.axis("off")
    fig.suptitle("input | masked | reconstruction | reconstruction with the visible patches pasted", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(out, dpi=120)
    plt.close(fig)
