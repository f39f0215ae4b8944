"""The motivation figures, drawn like the paper's: pixel histograms, BatchNorm input statistics, feature maps per
scale, and the fixed-weight demonstration."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .batch_norm import BatchNormShift  # noqa: E402
from .demo import FixedWeightDemo  # noqa: E402
from .pixels import PixelShift  # noqa: E402
from .survival import ENCODERS, ScaleSurvival  # noqa: E402

LABELS = {"unmasked": "unmasked image", "zero_out": "zero-outed (masked pixels 0)", "visible": "visible pixels only",
          "sparse": "sparse (visible positions)", "dense": "dense, zero-outed input"}


def _hide_ticks(axes: np.ndarray) -> None:
    """Maps of positions, not plots: no axis ticks."""
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])


def _save(fig: plt.Figure, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def pixel_histograms(shift: PixelShift, out: Path) -> None:
    """The three pixel-intensity distributions on one axis, with their distances in the legend."""
    fig, ax = plt.subplots(figsize=(7, 4))
    centres = (shift.edges[:-1] + shift.edges[1:]) / 2
    distance = {"zero_out": f" (W1 {shift.zero_out:.3f})", "visible": f" (W1 {shift.visible:.3f})", "unmasked": ""}
    for name, density in shift.histograms.items():
        ax.step(centres, density, where="mid", label=LABELS[name] + distance[name])
    ax.set_yscale("log")
    ax.set_xlabel("ImageNet-normalised pixel value")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    _save(fig, out)


def bn_shift(shifts: list[BatchNormShift], out: Path) -> None:
    """Per channel of the first BN's input: the masked conditions' mean and std against the unmasked ones (on the
    diagonal: no shift)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    if not shifts:
        for ax in axes:
            ax.text(0.5, 0.5, "no BatchNorm in this encoder", ha="center", va="center")
            ax.axis("off")
        _save(fig, out)
        return
    first = shifts[0]
    for ax, row, what in zip(axes, range(2), ("mean", "std")):
        reference = first.moments["unmasked"][row]
        for name, kl in (("zero_out", first.zero_out), ("sparse", first.sparse)):
            ax.scatter(reference, first.moments[name][row], s=10, label=f"{LABELS[name]} (KL {kl:.3g})")
        low, high = reference.min(), reference.max()
        ax.plot([low, high], [low, high], color="gray", lw=0.8)
        ax.set_xlabel(f"channel {what}, unmasked images")
        ax.set_ylabel(f"channel {what}, masked inputs")
        ax.set_title(f"input of {first.layer}: {what}", fontsize=9)
        ax.legend(fontsize=7)
    _save(fig, out)


def mask_survival(scales: list[ScaleSurvival], out: Path) -> None:
    """The first image's mask and its feature-norm map at every scale, dense and sparse, titled with the AUROC."""
    fig, axes = plt.subplots(2, len(scales) + 1, figsize=(2.2 * (len(scales) + 1), 4.6), squeeze=False)
    for row, name in enumerate(ENCODERS):
        axes[row, 0].imshow(scales[0].visible, cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title("mask (white: visible)", fontsize=8)
        axes[row, 0].set_ylabel(LABELS[name], fontsize=8)
        for ax, scale in zip(axes[row, 1:], scales):
            ax.imshow(scale.norms[name], cmap="magma")
            ax.set_title(f"1/{scale.reduction}: AUROC {scale.auroc[name]:.2f}", fontsize=8)
    _hide_ticks(axes)
    fig.suptitle("feature norm per position", fontsize=9)
    _save(fig, out)


def fixed_weight_demo(demo: FixedWeightDemo, out: Path) -> None:
    """The mask, then each layer's output, dense (top) and sparse (bottom), titled with the holes still empty."""
    layers = len(demo.maps["dense"])
    fig, axes = plt.subplots(2, layers + 1, figsize=(2.2 * (layers + 1), 4.6), squeeze=False)
    for row, name in enumerate(("dense", "sparse")):
        axes[row, 0].imshow(demo.visible.numpy(), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title("input mask", fontsize=8)
        axes[row, 0].set_ylabel(name, fontsize=9)
        for layer, (ax, image) in enumerate(zip(axes[row, 1:], demo.maps[name])):
            ax.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"conv {layer + 1}: {demo.zero_fraction[name][layer]:.0%} of holes 0", fontsize=8)
    _hide_ticks(axes)
    fig.suptitle("3x3 convolutions with weights 1/9, no bias", fontsize=9)
    _save(fig, out)
