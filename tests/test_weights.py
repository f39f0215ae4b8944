import argparse
from pathlib import Path

import pytest
import timm
import torch

from spark.model import SparKConfig, build_spark
from spark.weights import CheckpointError, LoadReport, load_checkpoint, read_encoder_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
# Buffers of the authors' SparK that nothing reads ("deprecated and would never be used", pretrain/spark.py).
AUTHORS_UNUSED = {"imn_m", "imn_s", "norm_black"}


def _authors_state(name, random=True):
    """A state dict with exactly the keys and shapes of the authors' checkpoint ``name`` (tests/fixtures): distinct
    random values, and counters 1, 2, 3 ... so that every tensor can be told apart after loading."""
    state = {}
    for line in (FIXTURES / f"authors_{name}.keys").read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape = line.split()
        if shape == "-":
            state[key] = torch.tensor(len(state) + 1)
        else:
            size = [int(n) for n in shape.split(",")]
            state[key] = torch.randn(size) if random else torch.zeros(size)
    return state


def spark_model(arch: str, input_size: int, **kwargs):
    return build_spark(SparKConfig(arch=arch, input_size=input_size, **kwargs))


def _uninitialised(build, *args, **kwargs):
    """``build(*args, **kwargs)`` without running its initialisers (fast for 50 M parameters): nothing in it is
    meaningful until a checkpoint is loaded, so anything not loaded is caught by :func:`_landed`."""
    with torch.device("meta"):
        model = build(*args, **kwargs)
    return model.to_empty(device="cpu")


def _fingerprint(t):
    return t.numel(), tuple(t.flatten()[:4].tolist())


def _landed(model_state, checkpoint, unused=frozenset()):
    """Which checkpoint key each model tensor got its values from. Asserts a bijection: every model tensor holds
    the values of one checkpoint tensor, and every checkpoint tensor but ``unused`` landed in exactly one."""
    source = {_fingerprint(v): k for k, v in checkpoint.items()}
    assert len(source) == len(checkpoint)
    landed = {}
    for name, tensor in model_state.items():
        assert _fingerprint(tensor) in source, f"{name} was left as initialised"
        landed[name] = source[_fingerprint(tensor)]
    assert len(set(landed.values())) == len(landed), "a checkpoint tensor was loaded twice"
    assert set(checkpoint) - set(landed.values()) == set(unused)
    return landed


def _assert_renamed(model, checkpoint, landed, renames):
    """Hand-written checks of where specific tensors of the authors' checkpoint must land, by value."""
    state = model.state_dict()
    for theirs, ours in renames.items():
        assert landed[ours] == theirs
        assert torch.equal(state[ours].flatten(), checkpoint[theirs].flatten()), ours


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
    model = _randomised(build_spark(SparKConfig(arch=arch, input_size=64, decoder_width=64)))
    plain = timm.create_model(arch)
    missing, unexpected = plain.load_state_dict(model.encoder_state_dict(), strict=False)
    assert not unexpected
    assert missing and all(k.startswith(("fc.", "head.")) for k in missing)
    for k, v in model.encoder_state_dict().items():
        assert torch.equal(plain.state_dict()[k], v)


def test_roundtrip_our_checkpoint(tmp_path):
    src = _randomised(build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64)))
    torch.save({"model": src.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth")
    dst = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64))
    report = load_checkpoint(dst, tmp_path / "checkpoint.pth")
    assert report.layout == "spark" and report.missing == []
    _assert_same(src, dst)


def test_timm_style_encoder_into_spark_and_into_a_classifier(tmp_path):
    src = _randomised(build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64)))
    timm_style = dict(src.encoder_state_dict(), **{"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(timm_style, tmp_path / "resnet18_1kpretrained_timm_style.pth")

    dst = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64))
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
    model = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64))
    torch.save({"model": {"not": "tensors"}}, tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(model, tmp_path / "junk.pth")
    torch.save(spark_model("resnet50", 64, decoder_width=64).encoder_state_dict(), tmp_path / "r50.pth")
    with pytest.raises(CheckpointError, match="does not fit 'resnet18'"):
        load_checkpoint(model, tmp_path / "r50.pth")
    torch.save(spark_model("resnet18", 64, decoder_width=128).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match=r"tensors do not fit 'resnet18': size mismatch for decoder\.head"):
        load_checkpoint(model, tmp_path / "wide.pth")
    torch.save({"model": argparse.Namespace(code="arbitrary object")}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(model, tmp_path / "pickle.pth")


def test_the_authors_resnet50_encoder_checkpoint(tmp_path):
    released = _authors_state("resnet50_1kpretrained_timm_style")
    assert len(released) == 318
    path = tmp_path / "resnet50_1kpretrained_timm_style.pth"
    torch.save(released, path)

    model = _uninitialised(spark_model, "resnet50", 224)
    assert load_checkpoint(model, path) == LoadReport("timm", [], [])
    landed = _landed(model.encoder.state_dict(), released)
    assert landed == {k: k for k in released}  # timm names throughout
    _assert_renamed(model.encoder, released, landed, {"layer4.2.bn3.running_var": "layer4.2.bn3.running_var",
                                                      "layer1.0.downsample.0.weight": "layer1.0.downsample.0.weight"})

    classifier = _uninitialised(timm.create_model, "resnet50", num_classes=10)  # what fine-tuning loads it into
    assert load_checkpoint(classifier, path) == LoadReport("timm", ["fc.bias", "fc.weight"], [])
    state = classifier.state_dict()
    assert all(torch.equal(state[k], v) for k, v in released.items())


# The authors' ConvNeXt (official facebookresearch names) -> timm's, one line per renaming rule.
CONVNEXT_RENAMES = {
    "downsample_layers.0.0.weight": "stem.0.weight",  # the 4x4 patchify conv
    "downsample_layers.0.1.bias": "stem.1.bias",  # and its LayerNorm
    "downsample_layers.2.0.weight": "stages.2.downsample.0.weight",  # the LayerNorm before stage 2's stride-2 conv
    "downsample_layers.3.1.weight": "stages.3.downsample.1.weight",  # stage 3's stride-2 conv
    "stages.0.0.dwconv.weight": "stages.0.blocks.0.conv_dw.weight",
    "stages.1.2.norm.bias": "stages.1.blocks.2.norm.bias",
    "stages.2.26.pwconv1.weight": "stages.2.blocks.26.mlp.fc1.weight",
    "stages.2.13.pwconv2.bias": "stages.2.blocks.13.mlp.fc2.bias",
    "stages.3.2.gamma": "stages.3.blocks.2.gamma",
}


def test_the_authors_convnext_small_encoder_checkpoint():
    released = _authors_state("convnext_small_1kpretrained_timm_style")
    assert len(released) == 340

    model = _uninitialised(spark_model, "convnext_small", 224)
    assert load_checkpoint(model, released) == LoadReport("timm", [], [])
    _assert_renamed(model.encoder, released, _landed(model.encoder.state_dict(), released), CONVNEXT_RENAMES)

    classifier = _uninitialised(timm.create_model, "convnext_small", num_classes=10)
    report = load_checkpoint(classifier, released)
    assert report == LoadReport("timm", ["head.fc.bias", "head.fc.weight", "head.norm.bias", "head.norm.weight"], [])
    landed = _landed({k: v for k, v in classifier.state_dict().items() if not k.startswith("head.")}, released)
    assert landed["stages.2.blocks.26.mlp.fc1.weight"] == "stages.2.26.pwconv1.weight"


# Their SparK module names -> ours, per renaming rule, for each released architecture.
SPARK_RENAMES = {
    "resnet50": {
        "sparse_encoder.sp_cnn.conv1.weight": "encoder.conv1.weight",
        "sparse_encoder.sp_cnn.layer4.2.bn3.running_var": "encoder.layer4.2.bn3.running_var",
        "dense_decoder.dec.0.up_sample.weight": "decoder.blocks.0.up_sample.weight",
        "dense_decoder.dec.2.conv.3.weight": "decoder.blocks.2.conv.3.weight",
        "dense_decoder.dec.4.conv.4.num_batches_tracked": "decoder.blocks.4.conv.4.num_batches_tracked",
        "dense_decoder.proj.bias": "decoder.head.bias",
        "densify_norms.0.running_mean": "densify.0.norm.running_mean",  # BN densify norms for ResNets
        "densify_projs.0.weight": "densify.0.proj.weight",  # 1x1, 2048 -> 768
        "densify_projs.3.weight": "densify.3.proj.weight",  # 3x3, 256 -> 96
        "mask_tokens.0": "densify.0.mask_token",
        "mask_tokens.3": "densify.3.mask_token",
    },
    "convnext_small": {
        "sparse_encoder.sp_cnn.downsample_layers.0.0.weight": "encoder.stem.0.weight",
        "sparse_encoder.sp_cnn.stages.2.26.pwconv1.weight": "encoder.stages.2.blocks.26.mlp.fc1.weight",
        "sparse_encoder.sp_cnn.stages.3.2.gamma": "encoder.stages.3.blocks.2.gamma",
        "dense_decoder.dec.1.conv.1.running_var": "decoder.blocks.1.conv.1.running_var",
        "dense_decoder.proj.weight": "decoder.head.weight",
        "densify_norms.0.weight": "densify.0.norm.weight",  # LayerNorm densify norms for ConvNeXt
        "densify_projs.1.weight": "densify.1.proj.weight",
        "mask_tokens.2": "densify.2.mask_token",
    },
}


@pytest.mark.parametrize("arch,densify_norm", [("resnet50", "bn"), ("convnext_small", "ln")])
def test_the_authors_spark_checkpoints_with_decoder(arch, densify_norm, tmp_path):
    state = _authors_state(f"{arch}_withdecoder_1kpretrained_spark_style")
    # What their pretrain/main.py writes: SparK.state_dict(with_config=True) (a non-tensor 'config' entry next to
    # the tensors) under 'module', with the run's metadata and optimizer around it (pretrain/utils/misc.py).
    config = {"mask_ratio": 0.6, "densify_norm_str": densify_norm, "sbn": True, "hierarchy": 4,
              "sparse_encoder.input_size": 224, "dense_decoder.width": 768}
    checkpoint = {"args": "Args(...)", "input_size": 224, "arch": arch, "epoch": 1599, "performance_desc": "0.52 0.51",
                  "module": {**state, "config": config}, "optimizer": {"state": {}, "param_groups": []},
                  "is_pretrain": True}
    if arch == "resnet50":  # through a file too: all of it must pass torch.load(weights_only=True)
        torch.save(checkpoint, tmp_path / "res50_withdecoder_1kpretrained_spark_style.pth")
        checkpoint = tmp_path / "res50_withdecoder_1kpretrained_spark_style.pth"

    model = _uninitialised(spark_model, arch, 224)  # the paper's decoder: width 768, 2 convs per block
    assert load_checkpoint(model, checkpoint) == LoadReport("authors-spark", [], [])
    landed = _landed(model.state_dict(), state, unused=AUTHORS_UNUSED)
    _assert_renamed(model, state, landed, SPARK_RENAMES[arch])
    if arch == "convnext_small":  # 768 channels = the decoder width: no projection, in theirs and ours
        assert "densify.0.proj.weight" not in model.state_dict() and "densify_projs.0.weight" not in state


def _detectron2_names(state):
    """The authors' downstream_d2/convert-timm-to-d2.py renaming of a timm ResNet (a layout we do not read)."""
    out = {}
    for k, v in state.items():
        if "layer" not in k:
            k = "stem." + k
        for t in (1, 2, 3, 4):
            k = k.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            k = k.replace(f"bn{t}", f"conv{t}.norm")
        out[k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")] = v
    return out


def test_wrong_layouts_of_the_authors_checkpoints_are_refused_with_a_reason():
    resnet50 = _authors_state("resnet50_1kpretrained_timm_style", random=False)
    convnext_small = _authors_state("convnext_small_1kpretrained_timm_style", random=False)
    with_decoder = _authors_state("resnet50_withdecoder_1kpretrained_spark_style", random=False)
    spark = spark_model
    cases = [
        (_detectron2_names(resnet50), spark, "resnet50", {}, (r"does not fit 'resnet50': 318 missing keys "
         r"\['bn1\.bias', .*318 unexpected keys \['res2\.0\.conv1\.norm\.bias'")),
        (resnet50, spark, "resnet101", {}, r"does not fit 'resnet101': 306 missing keys \['layer3\.10\."),
        (resnet50, spark, "convnext_small", {}, r"does not fit 'convnext_small': 340 missing keys"),
        (convnext_small, spark, "resnet50", {}, r"does not fit 'resnet50': 318 missing keys"),
        # ConvNeXt-S into the wrong ConvNeXt (timm's converter reshapes by the target's keys and shapes)
        (convnext_small, spark, "convnext_tiny", {}, r"does not fit 'convnext_tiny'"),
        (convnext_small, spark, "convnext_base", {}, r"does not fit 'convnext_base'"),
        (convnext_small, timm.create_model, "convnext_tiny", {}, r"does not fit 'convnext_tiny'"),
        # their full SparK into ours with another decoder
        ({"module": with_decoder}, spark, "resnet50", {"decoder_width": 512}, r"tensors do not fit 'resnet50'"),
        ({"module": with_decoder}, spark, "resnet50", {"decoder_depth": 1}, r"SparK checkpoint does not fit"),
    ]
    for checkpoint, build, arch, options, message in cases:
        model = _uninitialised(build, arch, 224, **options) if build is spark else _uninitialised(build, arch)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(model, checkpoint)
