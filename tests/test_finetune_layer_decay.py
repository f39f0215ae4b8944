"""Layer-wise lr decay: the reference's layer grouping on timm names, scales per stage, weight-decay exemptions."""
import pytest
import timm
import torch
from timm.optim import Lamb

from eval.finetune.layer_decay import layer_ids, param_groups
from eval.finetune.optim import build_optimizer
from spark.engine.step import apply_lr_wd


def build(arch: str) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(arch, num_classes=10)


def scale_by_param(model: torch.nn.Module, layer_decay: float) -> dict[str, float]:
    return {name: group["lr_scale"] for group in param_groups(model, layer_decay) for name, _ in group["params"]}


def scales_by_prefix(model: torch.nn.Module, layer_decay: float, prefixes: dict[str, float]) -> dict[str, set[float]]:
    """For each prefix, the set of lr scales its parameters received (each set must be a single value)."""
    scales = scale_by_param(model, layer_decay)
    found = {prefix: {round(s, 10) for name, s in scales.items() if name.startswith(prefix)} for prefix in prefixes}
    assert all(found.values()), [p for p, s in found.items() if not s]
    return found


def test_resnet18_stem_each_stage_and_head():
    expected = {"conv1.": 0.16807, "bn1.": 0.16807, "layer1.": 0.2401, "layer2.": 0.343, "layer3.": 0.49,
                "layer4.": 0.7, "fc.": 1.0}  # 0.7 ** (5, 5, 4, 3, 2, 1, 0)
    assert scales_by_prefix(build("resnet18"), 0.7, expected) == {p: {s} for p, s in expected.items()}


def test_convnext_atto_stem_each_stage_and_head():
    expected = {  # stage 2 (6 blocks) in threes: 0.7 ** (6, 5, 4, 3, 3, 2, 1, 0)
        "stem.": 0.117649, "stages.0.": 0.16807, "stages.1.": 0.2401, "stages.2.downsample.": 0.343,
        "stages.2.blocks.0.": 0.343, "stages.2.blocks.2.": 0.343, "stages.2.blocks.3.": 0.49,
        "stages.2.blocks.5.": 0.49, "stages.3.": 0.7, "head.": 1.0,
    }
    assert scales_by_prefix(build("convnext_atto"), 0.7, expected) == {p: {s} for p, s in expected.items()}


@pytest.mark.parametrize("arch, layers", [("resnet50", 8), ("resnet101", 14), ("resnet152", 15), ("resnet200", 19),
                                          ("convnext_tiny", 8), ("convnext_base", 14)])
def test_layer_counts_of_the_reference_models(arch, layers):
    """The authors' get_layer_id_and_scale_exp: ResNet-50 ids 0..7, ResNet-101 0..13, ConvNeXt-B 0..13 ..."""
    ids = layer_ids(build(arch))
    assert sorted(set(ids.values())) == list(range(layers))
    head = "fc.weight" if arch.startswith("resnet") else "head.fc.weight"
    stem = "conv1.weight" if arch.startswith("resnet") else "stem.0.weight"
    assert (ids[stem], ids[head]) == (0, layers - 1)


def test_resnet50_blocks_are_grouped_as_in_the_reference():
    ids = layer_ids(build("resnet50"))
    blocks = [ids[f"layer{s}.{b}.conv1.weight"] for s, n in ((1, 3), (2, 4), (3, 6), (4, 3)) for b in range(n)]
    assert blocks == [1, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]


def test_weight_decay_exempts_biases_and_1d_parameters():
    model = build("convnext_atto")
    groups = param_groups(model, 0.7)
    names = [name for group in groups for name, _ in group["params"]]
    assert sorted(names) == sorted(name for name, _ in model.named_parameters())  # each exactly once
    for group in groups:
        for name, param in group["params"]:
            exempt = param.ndim <= 1 or name.endswith(".bias")  # norms, biases, layer scale (gamma)
            assert group["weight_decay_scale"] == (0.0 if exempt else 1.0), name
    assert len({(g["lr_scale"], g["weight_decay_scale"]) for g in groups}) == len(groups)


def test_no_decay_needs_no_layer_ids_and_fits_any_model():
    model = build("test_vit")
    assert set(scale_by_param(model, 1.0).values()) == {1.0}
    with pytest.raises(TypeError, match="defined for timm ResNet and ConvNeXt, not VisionTransformer"):
        param_groups(model, 0.7)


def test_optimizer_groups_follow_the_engine_schedule():
    model = timm.create_model("resnet18", num_classes=10)
    optimizer = build_optimizer(model, "lamb", lr=0.01, weight_decay=0.02, layer_decay=0.7)
    assert isinstance(optimizer, Lamb)
    assert optimizer.defaults["always_adapt"] and not optimizer.defaults["bias_correction"]
    assert optimizer.defaults["max_grad_norm"] is None
    apply_lr_wd(optimizer, lr=0.01, weight_decay=0.02)
    by_name = {name: group for group in optimizer.param_groups for name in group["param_names"]}
    assert by_name["conv1.weight"]["lr"] == pytest.approx(0.01 * 0.7 ** 5)
    assert by_name["fc.weight"]["lr"] == pytest.approx(0.01)
    assert (by_name["fc.weight"]["weight_decay"], by_name["fc.bias"]["weight_decay"]) == (0.02, 0.0)
    assert isinstance(build_optimizer(model, "adamw", 0.01, 0.05, 0.7), torch.optim.AdamW)
