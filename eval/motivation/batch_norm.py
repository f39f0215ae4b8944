"""Distribution shift at the BatchNorm layers: the batch statistics a BN normalises with under masked pretraining
inputs, against those of the unmasked images a fine-tuned encoder sees.

Per channel, the statistics are a Gaussian N(mean, var + eps) (``eps`` the BN's own, as it normalises with it); the
distance is the KL divergence KL(unmasked || masked): the cost of describing the unmasked activations with the
statistics pretraining normalised them by. It folds the mean shift (in units of the masked std) and the variance
ratio into one number, is 0 only for equal statistics and is invariant to each channel's scale, so channels can be
averaged. The dense encoder's statistics count every position of the zero-outed image; the sparse encoder's count
the visible positions only, as its masked BatchNorm does.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from spark.model import SparK
from spark.sparse import SparseLayer

from ..stats import BootstrapInterval, bootstrap_interval
from .encoders import EncoderPair, batched_features

CONDITIONS = ("unmasked", "zero_out", "sparse")  # dense encoder, all visible; dense, masked pixels 0; sparse


@dataclass(frozen=True)
class BatchNormShift:
    """One BN layer's input statistics: the mean KL over channels of zero-outing and of sparse encoding, their
    difference (zero_out - sparse) with its interval over images, and each condition's per-channel (mean, std)."""

    layer: str
    zero_out: float
    sparse: float
    difference: BootstrapInterval
    moments: dict[str, np.ndarray]  # condition: (2, channels)


def batch_norms(model: SparK, count: int) -> list[tuple[str, nn.Module]]:
    """The first ``count`` BatchNorm layers of the encoder, in the order they are defined (the stem's first)."""
    norms = [(name, m) for name, m in model.encoder.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return norms[:count]


def input_moments(model: SparK, images: Tensor, visible: Tensor, layers: int, batch: int) -> list[np.ndarray]:
    """Per image and per layer, the count of positions a BN's statistics cover and its input's per-channel sum and
    sum of squares over them: one (n, 1 + 2 * channels) array per layer, in float64."""
    rows: list[list[Tensor]] = [[] for _ in range(layers)]

    def record(index: int, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        x = inputs[0].double()
        mask = (model.visible_mask.at(x.shape[-2:]).to(x.dtype) if isinstance(module, SparseLayer)
                else torch.ones_like(x[:, :1]))
        rows[index].append(torch.cat([mask.sum((1, 2, 3))[:, None], (x * mask).sum((2, 3)),
                                      (x.square() * mask).sum((2, 3))], 1))

    norms = batch_norms(model, layers)
    hooks = [norm.register_forward_hook(functools.partial(record, i)) for i, (_, norm) in enumerate(norms)]
    try:
        for _ in batched_features(model, images, visible, batch):
            pass  # the hooks record what they need
    finally:
        for hook in hooks:
            hook.remove()
    return [torch.cat(r).numpy() for r in rows]


def gaussian_kl(reference: np.ndarray, other: np.ndarray, eps: float) -> np.ndarray:
    """KL(N(reference) || N(other)) per channel, from pooled ``[count, sums..., squares...]`` rows."""
    (mean_r, var_r), (mean_o, var_o) = _mean_var(reference, eps), _mean_var(other, eps)
    return 0.5 * (np.log(var_o / var_r) + (var_r + (mean_r - mean_o) ** 2) / var_o - 1)


def _mean_var(pooled: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    count, sums, squares = pooled[0], *np.split(pooled[1:], 2)
    mean = sums / count
    return mean, np.maximum(squares / count - mean**2, 0) + eps


def batch_norm_shift(pair: EncoderPair, images: Tensor, visible: Tensor, layers: int = 1, batch: int = 32,
                     resamples: int = 1000, seed: int = 0) -> list[BatchNormShift]:
    """The shift at each of the encoder's first ``layers`` BNs (none for an encoder without BatchNorm, such as
    ConvNeXt's LayerNorms); intervals resample images."""
    norms = batch_norms(pair.dense, layers)
    everything = torch.ones_like(visible)
    per_condition = [input_moments(pair.dense, images, everything, len(norms), batch),
                     input_moments(pair.dense, images, visible, len(norms), batch),
                     input_moments(pair.sparse, images, visible, len(norms), batch)]
    shifts = []
    for index, (name, norm) in enumerate(norms):
        unmasked, zero_out, sparse = (moments[index] for moments in per_condition)

        def divergences(weights: np.ndarray) -> tuple[float, float]:
            reference = weights @ unmasked
            return (float(gaussian_kl(reference, weights @ zero_out, norm.eps).mean()),
                    float(gaussian_kl(reference, weights @ sparse, norm.eps).mean()))

        kl_zero_out, kl_sparse = divergences(np.ones(len(images)))
        difference = bootstrap_interval(lambda w: float(np.subtract(*divergences(w))), len(images), resamples, seed)
        moments = {}
        for condition, rows in zip(CONDITIONS, (unmasked, zero_out, sparse)):
            mean, var = _mean_var(rows.sum(0), 0.0)
            moments[condition] = np.stack([mean, np.sqrt(var)])
        shifts.append(BatchNormShift(name, kl_zero_out, kl_sparse, difference, moments))
    return shifts
