"""Initialising the classifier from each source: our encoder.pth, a full SparK checkpoint, the authors' timm-style
weights (1000-class head), or scratch; the report names what stayed initialised, a wrong architecture fails."""
import pytest
import timm
import torch
from timm.layers import DropPath

from eval.finetune import build_classifier
from eval.arms import SCRATCH
from spark.model import SparKConfig, build_spark
from spark.weights import CheckpointError
from spark.io import save_torch

HEAD = ["fc.bias", "fc.weight"]


@pytest.fixture(scope="module")
def spark_model():
    torch.manual_seed(1)
    return build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64))


def assert_trunk_equal(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    trunk = [k for k in state if not k.startswith("fc.")]
    assert trunk and all(torch.equal(state[k], expected[k]) for k in trunk)


def test_our_encoder_pth(spark_model, tmp_path):
    path = tmp_path / "encoder.pth"
    save_torch(spark_model.encoder_state_dict(), path)
    model, report = build_classifier("resnet18", 10, 0.0, path)
    assert (report.layout, report.missing, report.ignored) == ("timm", HEAD, [])
    assert_trunk_equal(model, spark_model.encoder_state_dict())
    assert model.fc.out_features == 10


def test_full_spark_checkpoint(spark_model, tmp_path):
    path = tmp_path / "checkpoint.pth"  # what spark.pretrain writes: weights beside optimizer state and history
    save_torch({"model": spark_model.state_dict(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 3,
                "history": [{"loss": 1.0}]}, path)
    model, report = build_classifier("resnet18", 10, 0.0, path)
    assert (report.layout, report.missing, report.ignored) == ("spark", HEAD, [])
    assert_trunk_equal(model, spark_model.encoder_state_dict())


def test_authors_timm_style_checkpoint_with_a_1000_class_head(tmp_path):
    released = timm.create_model("resnet18")  # *_1kpretrained_timm_style.pth: a plain timm state dict
    path = tmp_path / "resnet18_1kpretrained_timm_style.pth"
    save_torch(released.state_dict(), path)
    model, report = build_classifier("resnet18", 10, 0.0, path)
    assert (report.layout, report.missing, report.ignored) == ("timm", HEAD, HEAD)  # 1000-class head not used
    assert_trunk_equal(model, released.state_dict())
    assert model.fc.weight.shape == (10, 512)


def test_scratch_is_seeded_random_init():
    torch.manual_seed(0)
    first, report = build_classifier("resnet18", 10, 0.1, SCRATCH)
    torch.manual_seed(0)
    second, _ = build_classifier("resnet18", 10, 0.1, SCRATCH)
    assert report is None
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert max(m.drop_prob for m in first.modules() if isinstance(m, DropPath)) == pytest.approx(0.1)


@pytest.mark.parametrize("arch", ["resnet34", "convnext_atto"])
def test_wrong_architecture_fails_clearly(spark_model, tmp_path, arch):
    path = tmp_path / "encoder.pth"
    save_torch(spark_model.encoder_state_dict(), path)
    with pytest.raises(CheckpointError, match=f"does not fit '{arch}'"):
        build_classifier(arch, 10, 0.0, path)


def test_not_a_checkpoint_fails_clearly(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read as a weights-only torch checkpoint"):
        build_classifier("resnet18", 10, 0.0, path)
