import argparse
import re

import pytest
import timm
import torch

from spark import CheckpointError, build_spark, load_checkpoint, read_encoder_state_dict

# Our module names -> the authors' (written out independently of spark.checkpoint).
OURS_TO_AUTHORS = [
    (r"^encoder\.", "sparse_encoder.sp_cnn."),
    (r"^decoder\.blocks\.", "dense_decoder.dec."),
    (r"^decoder\.head\.", "dense_decoder.proj."),
    (r"^densify\.(\d+)\.norm\.", r"densify_norms.\1."),
    (r"^densify\.(\d+)\.proj\.", r"densify_projs.\1."),
    (r"^densify\.(\d+)\.mask_token$", r"mask_tokens.\1"),
]


def _authors_layout(state):
    out = {}
    for key, value in state.items():
        for pattern, repl in OURS_TO_AUTHORS:
            key, n = re.subn(pattern, repl, key)
            if n:
                break
        out[key] = value
    out.update(imn_m=torch.zeros(1, 3, 1, 1), imn_s=torch.ones(1, 3, 1, 1), norm_black=torch.zeros(1, 3, 1, 1))
    return {"module": out}


def _randomised(model):
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.uniform_(-1, 1)
    return model


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto"])
def test_encoder_state_dict_loads_strict_into_plain_timm(arch):
    model = _randomised(build_spark(arch, 64, decoder_width=64))
    plain = timm.create_model(arch)
    missing, unexpected = plain.load_state_dict(model.encoder_state_dict(), strict=False)
    assert not unexpected
    assert missing and all(k.startswith(("fc.", "head.")) for k in missing)
    for k, v in model.encoder_state_dict().items():
        assert torch.equal(plain.state_dict()[k], v)


def test_roundtrip_our_checkpoint(tmp_path):
    src = _randomised(build_spark("resnet18", 64, decoder_width=64))
    torch.save({"model": src.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth")
    dst = build_spark("resnet18", 64, decoder_width=64)
    report = load_checkpoint(dst, tmp_path / "checkpoint.pth")
    assert report.layout == "spark" and report.missing == []
    _assert_same(src, dst)


def test_loads_the_authors_spark_layout(tmp_path):
    src = _randomised(build_spark("resnet18", 64, decoder_width=64))
    torch.save(_authors_layout(src.state_dict()), tmp_path / "res18_withdecoder_1kpretrained_spark_style.pth")
    dst = build_spark("resnet18", 64, decoder_width=64)
    report = load_checkpoint(dst, tmp_path / "res18_withdecoder_1kpretrained_spark_style.pth")
    assert report.layout == "authors-spark"
    _assert_same(src, dst)


def test_timm_style_encoder_into_spark_and_into_a_classifier(tmp_path):
    src = _randomised(build_spark("resnet18", 64, decoder_width=64))
    timm_style = dict(src.encoder_state_dict(), **{"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(timm_style, tmp_path / "resnet18_1kpretrained_timm_style.pth")

    dst = build_spark("resnet18", 64, decoder_width=64)
    report = load_checkpoint(dst, tmp_path / "resnet18_1kpretrained_timm_style.pth")
    assert report.layout == "timm" and report.ignored == ["fc.bias", "fc.weight"]
    _assert_same(src.encoder, dst.encoder)

    classifier = timm.create_model("resnet18", num_classes=10)
    report = load_checkpoint(classifier, tmp_path / "resnet18_1kpretrained_timm_style.pth")
    assert report.missing == ["fc.bias", "fc.weight"]
    for k, v in src.encoder_state_dict().items():
        assert torch.equal(classifier.state_dict()[k], v)
    # Full SparK checkpoints give the same encoder weights to a classifier.
    assert read_encoder_state_dict({"model": src.state_dict()}).keys() == src.encoder_state_dict().keys()


def test_rejects_bad_checkpoints(tmp_path):
    model = build_spark("resnet18", 64, decoder_width=64)
    torch.save({"model": {"not": "tensors"}}, tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(model, tmp_path / "junk.pth")
    torch.save(build_spark("resnet50", 64, decoder_width=64).encoder_state_dict(), tmp_path / "r50.pth")
    with pytest.raises(CheckpointError, match="does not fit 'resnet18'"):
        load_checkpoint(model, tmp_path / "r50.pth")
    torch.save(build_spark("resnet18", 64, decoder_width=128).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError):
        load_checkpoint(model, tmp_path / "wide.pth")
    torch.save({"model": argparse.Namespace(code="arbitrary object")}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(model, tmp_path / "pickle.pth")
