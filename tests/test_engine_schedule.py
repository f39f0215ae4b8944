"""The per-iteration schedules against the reference's closed-form formulas."""
import math

import pytest
import torch

from spark.engine.step import apply_lr_wd, cosine, warmup_cosine

PEAK, WARMUP, TOTAL = 3.2e-3, 40, 1600


def reference_lr(it: int) -> float:
    """The SparK reference's ``lr_wd_annealing`` learning rate, written out."""
    if it < WARMUP:
        return 0.005 * PEAK + 0.995 * PEAK * it / WARMUP
    ratio = (it - WARMUP) / (TOTAL - 1 - WARMUP)
    return 0.001 * PEAK + 0.999 * PEAK * (0.5 + 0.5 * math.cos(math.pi * ratio))


def reference_wd(it: int, start: float = 0.04, end: float = 0.2) -> float:
    return end + (start - end) * (0.5 + 0.5 * math.cos(math.pi * it / (TOTAL - 1)))


@pytest.mark.parametrize("it", [0, 1, 20, 39, 40, 41, 500, 820, 1598, 1599])
def test_lr_and_wd_equal_the_reference_formulas(it):
    assert warmup_cosine(it, PEAK, WARMUP, TOTAL) == pytest.approx(reference_lr(it), rel=1e-12)
    assert cosine(it, TOTAL, 0.04, 0.2) == pytest.approx(reference_wd(it), rel=1e-12)


def test_schedule_end_points():
    assert warmup_cosine(0, PEAK, WARMUP, TOTAL) == pytest.approx(0.005 * PEAK)
    assert warmup_cosine(WARMUP, PEAK, WARMUP, TOTAL) == pytest.approx(PEAK)
    assert warmup_cosine(TOTAL - 1, PEAK, WARMUP, TOTAL) == pytest.approx(0.001 * PEAK)
    assert warmup_cosine(15, 1.0, 5, 26) == pytest.approx(0.001 + 0.999 * 0.5)  # half-way through the cosine
    assert cosine(0, TOTAL, 0.04, 0.2) == pytest.approx(0.04)
    assert cosine(TOTAL - 1, TOTAL, 0.04, 0.2) == pytest.approx(0.2)
    lrs = [warmup_cosine(i, PEAK, WARMUP, TOTAL) for i in range(TOTAL)]
    assert all(a < b for a, b in zip(lrs[:WARMUP], lrs[1 : WARMUP + 1]))  # rises during warmup
    assert all(a >= b for a, b in zip(lrs[WARMUP:], lrs[WARMUP + 1 :]))  # then only falls


def test_no_warmup_starts_at_peak():
    assert warmup_cosine(0, 1.0, 0, 10) == pytest.approx(1.0)


def test_apply_lr_wd_honours_group_scales():
    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    optimizer = torch.optim.SGD([
        {"params": [a]},
        {"params": [b], "weight_decay_scale": 0.0},
        {"params": [c], "lr_scale": 0.5, "weight_decay_scale": 1.0},
    ], lr=1.0)
    apply_lr_wd(optimizer, lr=0.1, weight_decay=0.05)
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(0.1, 0.05), (0.1, 0.0), (0.05, 0.05)]
