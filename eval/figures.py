"""The report's figures: pretraining loss and k-NN curves of every variant, and reconstructions side by side."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from .tables import Run  # noqa: E402

LOSS_CURVE = Path("dvclive/plots/metrics/loss.tsv")
KNN_CURVE = Path("dvclive/plots/metrics/knn_top1.tsv")


def loss_curves(pretrain: list[Run], out: Path) -> None:
    """Per-epoch pretraining loss of each run on one plot (each variant's own loss: ``loss_all`` averages over all
    patches, the others over masked patches only)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in pretrain:
        curve = pd.read_csv(run.path / LOSS_CURVE, sep="\t")
        ax.plot(curve["step"], curve["loss"], label=_label(run))
    _save_curves(fig, ax, "pretraining loss (per-patch normalised MSE)", out)


def knn_curves(pretrain: list[Run], out: Path) -> None:
    """Each run's k-NN top-1 on the epochs it was measured, from its initial weights' value (epoch 0, and a dashed
    line): the loss compares no two variants, this compares what their encoders learnt."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in pretrain:
        curve = pd.read_csv(run.path / KNN_CURVE, sep="\t")
        init = run.metrics["knn_top1_init"]
        line, = ax.plot([0, *curve["step"]], [init, *curve["knn_top1"]], marker="o", markersize=3, label=_label(run))
        ax.axhline(init, color=line.get_color(), linestyle="--", linewidth=0.8)
    _save_curves(fig, ax, "k-NN top-1 (%) of the encoder's features", out)


def _label(run: Run) -> str:
    return f"{run.branch.model} {run.branch.init}" + (f" (seed {run.branch.seed})" if run.branch.seed else "")


def _save_curves(fig: plt.Figure, ax: plt.Axes, ylabel: str, out: Path) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
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
