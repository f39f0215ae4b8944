"""Paired differences over seeds and bootstrap intervals over images: the intervals against hand-computed values,
and the verdict rule."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eval.stats import bootstrap_interval, paired_difference


def test_paired_t_interval_matches_a_hand_computation():
    # differences 2, 4, 3, 7: mean 4, sample std sqrt(14/3); t(0.975, 3) = 3.182446
    diff = paired_difference({0: 12.0, 1: 14.0, 2: 13.0, 3: 17.0}, {0: 10.0, 1: 10.0, 2: 10.0, 3: 10.0})
    half = 3.182446305284263 * math.sqrt(14 / 3) / 2
    assert (diff.mean, diff.n) == (4.0, 4) and diff.std == pytest.approx(math.sqrt(14 / 3))
    assert (diff.low, diff.high) == pytest.approx((4 - half, 4 + half), abs=1e-9)
    assert diff.verdict == "reproduced" and diff.interval() == "+4.00 [+0.56, +7.44]"


def test_pairing_is_by_seed_not_by_order():
    # the same values in another order: unpaired they would be a mixed bag, paired every difference is -1
    diff = paired_difference({2: 50.0, 0: 70.0, 1: 60.0}, {1: 61.0, 2: 51.0, 0: 71.0})
    assert (diff.mean, diff.std, diff.low, diff.high) == (-1.0, 0.0, -1.0, -1.0)
    assert diff.verdict == "contradicted"


def test_no_difference_at_all_is_inconclusive():
    """Equal arms on every seed: the interval is exactly [0, 0], which is neither above nor below 0."""
    diff = paired_difference({0: 70.0, 1: 60.0, 2: 65.0}, {0: 70.0, 1: 60.0, 2: 65.0})
    assert (diff.mean, diff.std, diff.low, diff.high) == (0.0, 0.0, 0.0, 0.0)
    assert diff.verdict == "inconclusive"


def test_straddling_zero_or_one_seed_is_inconclusive():
    assert paired_difference({0: 1.0, 1: -1.0, 2: 0.5}, {0: 0.0, 1: 0.0, 2: 0.0}).verdict == "inconclusive"
    single = paired_difference({0: 5.0, 1: 9.0}, {0: 1.0})  # only seed 0 is paired
    assert (single.mean, single.n, single.verdict) == (4.0, 1, "inconclusive") and math.isnan(single.low)
    assert single.interval() == "+4.00 (1 seed, no interval)"
    none = paired_difference({0: 1.0}, {1: 1.0})  # e.g. every seed of one arm diverged
    assert (none.n, none.verdict, none.interval()) == (0, "inconclusive", "no seed in common")
    assert math.isnan(none.mean) and math.isnan(none.low)


def weighted_mean(values):
    return lambda weights: float(np.average(values, weights=weights))


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    # 0..99: mean 49.5, population std sqrt((100^2 - 1) / 12), so the standard error of the mean is 2.8866
    values = np.arange(100.0)
    interval = bootstrap_interval(weighted_mean(values), len(values), resamples=4000, seed=0)
    half = 1.959964 * math.sqrt((100**2 - 1) / 12) / 10
    assert (interval.estimate, interval.n) == (49.5, 100)
    assert (interval.low, interval.high) == pytest.approx((49.5 - half, 49.5 + half), abs=0.4)
    assert interval == bootstrap_interval(weighted_mean(values), len(values), resamples=4000, seed=0)
    assert interval != bootstrap_interval(weighted_mean(values), len(values), resamples=4000, seed=1)


def test_bootstrap_verdict_follows_the_paired_rule():
    assert bootstrap_interval(weighted_mean(np.full(8, 0.3)), 8, resamples=50).verdict == "reproduced"
    assert bootstrap_interval(weighted_mean(np.full(8, -0.3)), 8, resamples=50).verdict == "contradicted"
    straddling = bootstrap_interval(weighted_mean(np.array([-1.0, 1.0] * 4)), 8, resamples=200)
    assert straddling.low < 0 < straddling.high and straddling.verdict == "inconclusive"
    exact_zero = bootstrap_interval(weighted_mean(np.zeros(8)), 8, resamples=50)
    assert (exact_zero.low, exact_zero.high, exact_zero.verdict) == (0.0, 0.0, "inconclusive")
