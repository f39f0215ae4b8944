"""Paired comparisons over seeds, and the verdict rule the report fixes in advance.

Two arms are paired when they share every seed: seed ``s`` fixes the data order, the label split, the head's
initialisation and the augmentation in both, so only the encoder initialisation differs. The interval is the
paired t interval over seeds, ``mean(d) ± t_{0.975, n-1} * std(d) / sqrt(n)`` for per-seed differences ``d``.

Verdict (the paper's direction is "first arm better"): *reproduced* if the whole 95% interval lies above 0,
*contradicted* if it lies below 0, *inconclusive* otherwise, and always with fewer than two seeds (no interval):
with none in common (an arm whose every seed diverged) too, so that the report still shows every other claim.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Literal, Mapping

from scipy import stats

CONFIDENCE = 0.95
Verdict = Literal["reproduced", "contradicted", "inconclusive"]


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
        if self.low > 0:
            return "reproduced"
        if self.high < 0:
            return "contradicted"
        return "inconclusive"  # straddles 0, or NaN bounds (one seed)

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
