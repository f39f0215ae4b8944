"""timm encoder weights into Detectron2 backbones: complete coverage, equal values, loud failures, and the native
ResNet and the timm-wrapped ResNet loading (and computing) exactly the same thing."""
from __future__ import annotations

import pytest

from helpers import detection_config, require

require("detectron2")
pytestmark = pytest.mark.detectron2

import timm  # noqa: E402
import torch  # noqa: E402
from detectron2.modeling import build_backbone  # noqa: E402

from eval.detection.convert import BackboneWeightsError, load_encoder, timm_resnet_to_detectron2  # noqa: E402
from eval.detection.recipe import build_cfg  # noqa: E402


def random_encoder(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A timm state_dict with every float tensor perturbed (BN statistics too), so each value is distinct but the
    network stays numerically sane."""
    gen = torch.Generator().manual_seed(seed)
    state = timm.create_model(arch).state_dict()
    return {
        k: (v * (0.5 + torch.rand(v.shape, generator=gen)) if k.endswith("running_var")
            else v + 0.02 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
        for k, v in state.items()
    }


def bottom_up(arch: str, backbone: str, tmp_path) -> torch.nn.Module:
    return build_backbone(build_cfg(detection_config(arch=arch, backbone=backbone), 10, tmp_path)).bottom_up


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_resnet_conversion_fills_every_backbone_key_with_its_value(arch, tmp_path):
    encoder = random_encoder(arch)
    native = bottom_up(arch, "resnet", tmp_path)
    load_encoder(native, encoder)
    converted = timm_resnet_to_detectron2(encoder)
    assert set(converted) == set(native.state_dict())  # nothing missing, nothing left over
    assert len(converted) == len(encoder) - 2  # only fc.weight / fc.bias dropped
    for key, value in native.state_dict().items():
        assert torch.equal(value, converted[key]), key
    last = "res5.1.conv2" if arch == "resnet18" else "res5.2.conv3"
    pairs = {
        "stem.conv1.weight": "conv1.weight", "stem.conv1.norm.running_var": "bn1.running_var",
        "res2.0.conv1.norm.weight": "layer1.0.bn1.weight", "res3.0.shortcut.weight": "layer2.0.downsample.0.weight",
        "res4.0.shortcut.norm.running_mean": "layer3.0.downsample.1.running_mean",
        f"{last}.norm.bias": f"layer4.{last[5]}.bn{last[-1]}.bias",
    }
    for d2_key, timm_key in pairs.items():
        assert torch.equal(native.state_dict()[d2_key], encoder[timm_key]), d2_key


def test_missing_or_mismatched_weights_fail_loudly(tmp_path):
    native = bottom_up("resnet18", "resnet", tmp_path)
    encoder = random_encoder("resnet18")
    del encoder["layer3.1.conv2.weight"]
    with pytest.raises(BackboneWeightsError, match=r"missing: res4\.1\.conv2\.weight"):
        load_encoder(native, encoder)
    encoder = random_encoder("resnet18")
    encoder["layer1.0.conv1.weight"] = encoder["layer1.0.conv1.weight"][:32]
    with pytest.raises(BackboneWeightsError, match=r"shape: res2\.0\.conv1\.weight is \(32, 64, 3, 3\) in the "
                                                   r"checkpoint, \(64, 64, 3, 3\) in the backbone"):
        load_encoder(native, encoder)
    with pytest.raises(BackboneWeightsError, match=r"unexpected: res2\.0\.conv3\.weight"):  # bottleneck blocks
        load_encoder(native, random_encoder("resnet50"))
    # A deep-stem ResNet is not Detectron2's ResNet: its stem keys have nowhere to go.
    with pytest.raises(BackboneWeightsError, match=r"unexpected: stem\.conv1\.0\.weight"):
        load_encoder(native, random_encoder("resnet18d"))


def test_timm_backbone_drops_the_head_but_nothing_else(tmp_path):
    wrapped = bottom_up("convnext_atto", "timm", tmp_path)
    encoder = random_encoder("convnext_atto")
    assert any(k.startswith("head.") for k in encoder)
    load_encoder(wrapped, encoder)
    for key, value in wrapped.body.model.state_dict().items():
        assert torch.equal(value, encoder[key]), key
    del encoder["stages.2.blocks.5.conv_dw.weight"]
    with pytest.raises(BackboneWeightsError, match=r"missing: stages\.2\.blocks\.5\.conv_dw\.weight"):
        load_encoder(wrapped, encoder)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_native_and_timm_paths_load_the_same_weights(arch, tmp_path):
    encoder = random_encoder(arch)
    native, wrapped = bottom_up(arch, "resnet", tmp_path), bottom_up(arch, "timm", tmp_path)
    load_encoder(native, encoder)
    load_encoder(wrapped, encoder)
    native_state, wrapped_state = native.state_dict(), wrapped.body.model.state_dict()
    renamed = timm_resnet_to_detectron2({k: k for k in wrapped_state})  # timm key -> native key
    assert set(renamed.values()) == set(wrapped_state) and set(renamed) == set(native_state)
    for native_key, timm_key in renamed.items():
        assert torch.equal(native_state[native_key], wrapped_state[timm_key]), native_key
    # Same weights, same architecture: identical features (eval-mode BN uses the loaded statistics).
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = native.eval()(x), wrapped.eval()(x)
    assert list(a) == list(b) == ["res2", "res3", "res4", "res5"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-4)
