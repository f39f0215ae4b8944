"""micro_batch: auto halves a rank's chunk until a pass fits (runs with it: tests/test_pretrain_run.py)."""
import pytest

from spark.engine.step import fit_micro_batch
from spark.errors import RunError


def test_halves_until_a_pass_fits():
    tried = []

    def fits(size):
        tried.append(size)
        return size <= 100

    assert fit_micro_batch(fits, 512) == 64 and tried == [512, 256, 128, 64]
    tried.clear()
    assert fit_micro_batch(fits, 300) == 75 and tried == [300, 150, 75]  # ceil halves: 300 = 75 + 75 + 75 + 75
    assert fit_micro_batch(lambda size: True, 7) == 7
    with pytest.raises(RunError, match="even one sample per pass runs out of device memory"):
        fit_micro_batch(lambda size: False, 3)
