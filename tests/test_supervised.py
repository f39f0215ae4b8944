"""The supervised arm's weights: found offline in torch's and the Hugging Face caches or in the DAG, never
downloaded; a missing published file stops the run before any work with one line saying how to fetch it."""
from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

import eval.cli
from helpers import detection_config
from eval.pipeline.params import load_params
from eval.pipeline.stages import check_published_weights, supervised_start
from eval.supervised import MissingWeightsError, weights_file
from spark.config import ConfigError
from spark.weights import read_state_dict

REPO = Path(__file__).resolve().parents[1]
TORCHVISION_R50 = "torchvision:ResNet50_Weights.IMAGENET1K_V1"


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """torch's hub and the Hugging Face cache in empty folders: nothing published is on this machine."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch-hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    return tmp_path


def test_published_weights_are_read_from_the_local_caches_only(empty_caches):
    with pytest.raises(MissingWeightsError) as missing:
        weights_file(TORCHVISION_R50, own="unused")
    message = str(missing.value)
    expected = empty_caches / "torch-hub/checkpoints/resnet50-0676ba61.pth"  # where torchvision would put it
    assert str(expected) in message and "get_weight('ResNet50_Weights.IMAGENET1K_V1')" in message
    assert "\n" not in message
    expected.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(1)}, expected)
    assert weights_file(TORCHVISION_R50, own="unused") == expected

    with pytest.raises(MissingWeightsError, match=r"timm.create_model\('resnet18.a1_in1k', pretrained=True\)"):
        weights_file("timm:resnet18.a1_in1k", own="unused")
    # the hub's cache layout: refs/main names the snapshot holding the file
    repo = empty_caches / "hf-hub/models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text("abc123")
    (repo / "snapshots/abc123").mkdir(parents=True)
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
    save_file(state, repo / "snapshots/abc123/model.safetensors")
    path = weights_file("timm:resnet18.a1_in1k", own="unused")
    loaded = read_state_dict(path)  # safetensors, as the hub publishes timm's weights
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_bad_sources_fail_with_one_line(tmp_path):
    assert weights_file("own", own=tmp_path / "encoder.pth") == tmp_path / "encoder.pth"
    with pytest.raises(MissingWeightsError, match="not a torchvision weights name"):
        weights_file("torchvision:ResNet50_Weights.NOPE", own="unused")
    with pytest.raises(MissingWeightsError, match="not a timm pretrained tag"):
        weights_file("timm:resnet18.nope", own="unused")
    with pytest.raises(MissingWeightsError, match="weights/r50.pth: no such file"):
        weights_file("weights/r50.pth", own="unused")
    with pytest.raises(ConfigError, match="supervised_weights: 'torchvision:' names no weights"):
        detection_config(supervised_weights="torchvision:")


def test_own_is_the_dags_from_scratch_classifier_with_all_labels():
    params = load_params(REPO / "params.yaml")
    assert str(supervised_start(params, "detection", "resnet18")) == "runs/mini/finetune/all/resnet18/scratch/seed0/encoder.pth"
    check_published_weights(params)  # nothing published: nothing to check


def test_a_missing_published_file_stops_the_first_job_before_any_work(empty_caches, monkeypatch, capsys):
    params = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    params["detection"]["supervised_weights"] = TORCHVISION_R50
    (empty_caches / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(empty_caches)
    assert eval.cli.main(["prepare", "--params", "params.yaml"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "resnet50-0676ba61.pth" in error and "get_weight" in error
    assert not (empty_caches / "data").exists()  # no dataset was built
    job = ["--params", "params.yaml", "--out", "run", "--model", "resnet18", "--init", "supervised"]
    assert eval.cli.main(["detection", *job]) == 2  # nor does a detection job start without them
    assert "get_weight" in capsys.readouterr().err and not (empty_caches / "run").exists()
