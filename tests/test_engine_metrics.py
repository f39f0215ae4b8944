"""Per-epoch metrics: summary line and dvclive history rebuilt on resume; no metrics.json before a run ends."""
import logging

import pytest

from spark.engine.records import DVCLIVE_DIR, METRICS_NAME, MetricsLog, format_record


def tsv_rows(run_dir, name):
    lines = (run_dir / DVCLIVE_DIR / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
    return [line.split("\t") for line in lines[1:]]


@pytest.fixture(autouse=True)
def _outside_any_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dvclive looks for (and may initialise) a DVC repo around the working directory


def test_log_writes_the_line_and_the_history(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    log = MetricsLog(tmp_path, epochs=4, logger=logging.getLogger("test"))
    log.log(1, {"loss": 0.9, "lr": 0.001})
    log.log(2, {"loss": 0.8, "lr": 0.002})
    log.close()
    assert not (tmp_path / METRICS_NAME).exists()  # a run's result, written by the trainer when it completes
    assert [(step, float(value)) for step, value in tsv_rows(tmp_path, "loss")] == [("1", 0.9), ("2", 0.8)]
    assert "epoch 2/4  loss 0.8  lr 0.002" in caplog.text


def test_resume_replays_history_without_duplicates(tmp_path):
    first = MetricsLog(tmp_path, epochs=4, logger=logging.getLogger("test"))
    for epoch in (1, 2, 3):  # epoch 3 was logged but never checkpointed
        first.log(epoch, {"loss": 1.0 / epoch})
    first.close()
    resumed = MetricsLog(tmp_path, epochs=4, logger=logging.getLogger("test"), history=[{"loss": 1.0}, {"loss": 0.5}])
    resumed.log(3, {"loss": 0.25})
    resumed.close()
    assert [step for step, _ in tsv_rows(tmp_path, "loss")] == ["1", "2", "3"]
    assert float(tsv_rows(tmp_path, "loss")[-1][1]) == 0.25
    with pytest.raises(ValueError, match="epoch 5 logged after 3 epochs"):
        resumed.log(5, {"loss": 0.1})


def test_format_record():
    assert format_record(3, 10, {"loss": 0.61234, "bad_images": 2}) == "epoch 3/10  loss 0.6123  bad_images 2"
