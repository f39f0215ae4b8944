"""The report's figures: the claims as a forest plot, each stage's training curves with the arms overlaid, the
k-NN monitor, and reconstructions side by side."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from .curves import DVCLIVE_METRICS  # noqa: E402
from .tables import Run  # noqa: E402

KNN_CURVE = DVCLIVE_METRICS / "knn_top1.tsv"
VERDICT_COLOURS = {"reproduced": "#1a9850", "contradicted": "#d73027", "inconclusive": "#707070"}


def claims_forest(claims: pd.DataFrame, out: Path) -> None:
    """Each claim's difference (the paper's direction positive) with its 95% interval, coloured by verdict, and the
    paper's own difference where it has the same comparison (``paper Δ``, a hollow diamond), one panel per metric:
    the units differ (top-1 points, AP, a Wasserstein distance, a KL divergence, an AUROC), so each panel has its
    own axis, through 0."""
    metrics = list(dict.fromkeys(claims["metric"]))
    labels = {claim: textwrap.fill(claim, 70) for claim in claims["claim"]}
    heights = [sum(labels[c].count("\n") + 1 for c in claims.loc[claims["metric"] == m, "claim"]) + 1.5
               for m in metrics]  # in lines of text: a wrapped claim takes two
    fig, axes = plt.subplots(len(metrics), 1, figsize=(12, 0.24 * sum(heights) + 0.8), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, layout="constrained")
    for ax, metric in zip(axes[:, 0], metrics):
        rows = claims[claims["metric"] == metric].reset_index(drop=True)
        ys = range(len(rows))[::-1]  # the table's order, top to bottom
        for y, row in zip(ys, rows.to_dict("records")):
            colour = VERDICT_COLOURS[row["verdict"]]
            if math.isfinite(row["95% low"]):
                ax.plot([row["95% low"], row["95% high"]], [y, y], color=colour, linewidth=2.2, solid_capstyle="butt")
            ax.plot(row["difference"], y, "o", color=colour, markersize=6)
            if math.isfinite(row["paper Δ"]):
                ax.plot(row["paper Δ"], y, "D", markerfacecolor="none", markeredgecolor="black", markersize=7)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(list(ys), [labels[claim] for claim in rows["claim"]], fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel(f"difference in {metric} (the paper's direction: > 0)", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", linewidth=2.2, label=f"{v}: difference, 95% interval")
               for v, c in VERDICT_COLOURS.items()]
    handles.append(Line2D([], [], color="black", marker="D", markerfacecolor="none", linestyle="",
                          label="the paper's effect"))
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=9, frameon=False)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def arm_curves(curves: pd.DataFrame, xlabel: str, ylabel: str, out: Path) -> None:
    """A quantity per arm (:func:`eval.curves.arm_curves`): its mean over seeds as a line, its range as a band; the
    legend beside the axes (an ablation branch has up to a dozen arms), the x axis from 0."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for arm, curve in curves.groupby("arm", sort=False):
        line, = ax.plot(curve["step"], curve["mean"], marker="o", markersize=3, label=arm)
        ax.fill_between(curve["step"], curve["low"], curve["high"], color=line.get_color(), alpha=0.2, linewidth=0)
    seeds = "/".join(map(str, sorted(set(curves["seeds"]))))
    ax.set_title(f"mean over seeds, band: their range ({seeds} seed(s) per {xlabel})", fontsize=9)
    ax.set_xlim(left=0)
    _save_curves(fig, ax, ylabel, out, xlabel, legend={"loc": "center left", "bbox_to_anchor": (1.01, 0.5)})


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


def _save_curves(fig: plt.Figure, ax: plt.Axes, ylabel: str, out: Path, xlabel: str = "epoch",
                 legend: dict | None = None) -> None:
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, **(legend or {}))
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
