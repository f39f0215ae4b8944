"""Paired comparisons over seeds, bootstrap intervals over images, and the verdict rule the report fixes in advance.

Two arms are paired when they share every seed: seed ``s`` fixes the data order, the label split, the head's
initialisation and the augmentation in both, so only the encoder initialisation differs. The interval is the
paired t interval over seeds, ``mean(d) ± t_{0.975, n-1} * std(d) / sqrt(n)`` for per-seed differences ``d``.

Verdict (the paper's direction is "first arm better"): *reproduced* if the whole 95% interval lies above 0,
*contradicted* if it lies below 0, *inconclusive* otherwise, and always with fewer than two seeds (no interval):
with none in common (an arm whose every seed diverged) too, so that the report still shows every other claim.

The motivation measurements (:mod:`eval.motivation`) rest on one encoder and many images instead: their interval is
the percentile bootstrap over images (:func:`bootstrap_interval`), judged by the same rule.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
Verdict = Literal["reproduced", "contradicted", "inconclusive"]


def verdict(low: float, high: float) -> Verdict:
    """The rule for a difference in the paper's direction with 95% interval ``[low, high]``."""
    if low > 0:
        return "reproduced"
    if high < 0:
        return "contradicted"
    return "inconclusive"  # straddles 0, or NaN bounds (one seed)


@dataclass(frozen=True)
class PairedDifference:
    """``treatment - control`` over the seeds both arms ran: mean, sample std, count and 95% interval (NaN with
    fewer than two seeds; the mean too with none)."""

    mean: float
    std: float
    n: int
    low: float
    high: float

    @property
    def verdict(self) -> Verdict:
        return verdict(self.low, self.high)

    def interval(self) -> str:
        """``+2.10 [+0.40, +3.80]``, ``+2.10 (1 seed, no interval)`` or ``no seed in common``."""
        if self.n == 0:
            return "no seed in common"
        if self.n < 2:
            return f"{self.mean:+.2f} ({self.n} seed, no interval)"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_difference(treatment: Mapping[int, float], control: Mapping[int, float]) -> PairedDifference:
    """The paired difference of two arms' per-seed values (keyed by seed); seeds only one arm ran are ignored."""
    seeds = sorted(treatment.keys() & control.keys())
    diffs = [treatment[s] - control[s] for s in seeds]
    if len(diffs) < 2:
        mean = diffs[0] if diffs else math.nan
        return PairedDifference(mean, math.nan, len(diffs), math.nan, math.nan)
    mean = statistics.fmean(diffs)
    std = statistics.stdev(diffs)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(diffs) - 1) * std / math.sqrt(len(diffs))
    return PairedDifference(mean, std, len(diffs), mean - half, mean + half)


@dataclass(frozen=True)
class BootstrapInterval:
    """A statistic of ``n`` images (``estimate``) and its 95% percentile-bootstrap interval over them."""

    estimate: float
    n: int
    low: float
    high: float

    @property
    def verdict(self) -> Verdict:
        return verdict(self.low, self.high)

    def __str__(self) -> str:
        """``+0.41 [+0.36, +0.45] over 256 images: reproduced``."""
        return f"{self.estimate:+.3g} [{self.low:+.3g}, {self.high:+.3g}] over {self.n} images: {self.verdict}"

    def to_dict(self) -> dict[str, float | int | str]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n, "verdict": self.verdict}


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 1000,
                       seed: int = 0) -> BootstrapInterval:
    """The percentile bootstrap of ``statistic`` over ``n`` images, resampled with replacement from ``seed``.

    ``statistic(weights)`` is the statistic of the sample in which image ``i`` appears ``weights[i]`` times (all
    ones: the sample itself). A resample is a multinomial count vector, the same distribution as drawing ``n``
    indices with replacement; counts let a statistic pooled over images (a histogram, a batch's moments, an AUROC
    over all positions) reweight per-image sums instead of copying the data.
    """
    if n < 1 or resamples < 1:
        raise ValueError(f"need at least one image and one resample, got n={n}, resamples={resamples}")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)
    values = np.array([statistic(weights) for weights in counts])
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return BootstrapInterval(float(statistic(np.ones(n))), n, float(low), float(high))
