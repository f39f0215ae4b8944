"""Run checkpoints: atomic, weights-only, never replaced by non-finite state."""
import pytest
import torch

from spark.engine.records import CHECKPOINT_NAME, checkpoint_due, load_state, save_state
from spark.engine.step import NonFiniteError


def test_round_trip_is_weights_only(tmp_path):
    assert load_state(tmp_path) is None
    state = {"model": {"w": torch.ones(2)}, "epoch": 3, "config": {"arch": "resnet18", "betas": [0.9, 0.95]},
             "history": [{"loss": 1.0}]}
    save_state(tmp_path, state)
    loaded = load_state(tmp_path)  # load_torch uses weights_only=True
    assert loaded["epoch"] == 3 and loaded["config"] == state["config"] and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temp file left behind


def test_non_finite_state_never_replaces_the_last_good_checkpoint(tmp_path):
    save_state(tmp_path, {"model": {"w": torch.ones(2)}, "epoch": 1})
    good = (tmp_path / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(NonFiniteError, match=r"model\.w has non-finite values"):
        save_state(tmp_path, {"model": {"w": torch.tensor([1.0, float("nan")])}, "epoch": 2})
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == good


@pytest.mark.parametrize("epoch, due", [(1, False), (5, True), (7, False), (10, True), (12, True)])
def test_checkpoint_every_n_epochs_and_at_the_end(epoch, due):
    assert checkpoint_due(epoch, epochs=12, every=5) is due


def test_atomic_writes_are_readable_and_keep_the_mode_they_replace(tmp_path):
    from spark.io import write_text

    write_text(tmp_path / "new.txt", "a")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644  # not the temp file's private 0600
    (tmp_path / "private.txt").write_text("a")
    (tmp_path / "private.txt").chmod(0o600)
    write_text(tmp_path / "private.txt", "b")
    assert (tmp_path / "private.txt").read_text() == "b" and (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt", "private.txt"]
