"""The statistics of the step benchmark (bench/pretrain_step.py), which is a script, not part of the package."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("pretrain_step", Path(__file__).parents[1] / "bench/pretrain_step.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_median_interval_is_the_binomial_order_statistics():
    assert bench.median_interval([float(v) for v in range(20, 0, -1)]) == (6.0, 15.0)  # P(Bin(20, 1/2) <= 5) = 0.021
    assert bench.median_interval(list(range(1, 11))) == (2, 9)  # P(Bin(10, 1/2) <= 1) = 0.011
    assert bench.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few rounds for 95 %: the range


def test_ratio_pairs_rounds():
    results = {("a",): {"rounds": [2.0, 4.0, 6.0]}, ("b",): {"rounds": [1.0, 4.0, 2.0]}}
    assert bench.ratio(results, ("a",), ("b",)) == "2.000 [1.000, 3.000] (1.000-3.000)"
    assert bench.ratio(results, ("a",), ("missing",)) == ""
