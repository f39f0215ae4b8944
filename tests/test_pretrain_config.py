"""The pretrain section: validated when parsed, naming the key, before any image is read."""
import pytest
import yaml

from eval.pipeline.params import branch_config, load_params
from spark.config import ConfigError, parse_section
from spark.pretrain import PretrainConfig

MISSING_DATA = "/nonexistent/images"  # parsing must fail on the bad key, not on the data


def pretrain_branch(path, overrides=(), **branch) -> PretrainConfig:
    return branch_config(load_params(path), PretrainConfig, overrides, **branch)


def parse(**pretrain) -> PretrainConfig:
    return parse_section({"pretrain": {"data": MISSING_DATA, **pretrain}}, "pretrain", PretrainConfig)


@pytest.mark.parametrize("values, message", [
    ({"mask_ratio": 1.5}, "params: pretrain.mask_ratio: must be in (0, 1), got 1.5"),
    ({"mask_ratio": 0.99, "input_size": 64}, "params: pretrain.mask_ratio: 0.99 keeps 0 of the 4 mask cells"),
    ({"arch": "resnet18", "input_size": 100}, "params: pretrain.input_size: must be a positive multiple of the downsample ratio 32"),
    ({"arch": "resnet_nope"}, "params: pretrain.arch: unknown timm architecture 'resnet_nope'"),
    ({"decoder_width": 100}, "params: pretrain.decoder_width: must be a positive multiple"),
    ({"hierarchy": 5}, "params: pretrain.hierarchy: must be in [1, 4]"),
    ({"encoder_mode": "dense"}, "params: pretrain.encoder_mode: must be one of 'sparse', 'zero_out'"),
    ({"precision": "fp16"}, "params: pretrain.precision: must be one of 'auto', 'fp32', 'bf16'"),
    ({"warmup_epochs": 10, "epochs": 10}, "params: pretrain.warmup_epochs: must be in [0, epochs=10)"),
    ({"betas": [0.9]}, "params: pretrain.betas: must be 'auto' or two numbers"),
    ({"global_batch": 0}, "params: pretrain.global_batch: must be >= 1"),
    ({"epochs": "many"}, "params: pretrain.epochs: expected int"),
    ({"mask_raito": 0.5}, "params: pretrain.mask_raito: unknown key"),
    ({"knn_k": 0}, "params: pretrain.knn_k: must be >= 1, got 0"),
    ({"knn_temperature": 0}, "params: pretrain.knn_temperature: must be > 0, got 0.0"),
    ({"knn_train_images": 0}, "params: pretrain.knn_train_images: must be >= 1, got 0"),
    ({"knn_every": 0}, "params: pretrain.knn_every: must be >= 1, got 0"),
    ({"knn_data": ""}, "params: pretrain.knn_data: must name an ImageFolder root or be null"),
])
def test_invalid_values_name_the_key(values, message):
    with pytest.raises(ConfigError) as err:
        parse(**values)
    assert str(err.value).startswith(message)


def test_global_batch_must_split_over_the_ranks():
    config = parse(global_batch=4096)
    config.check_world_size(8)
    with pytest.raises(ConfigError, match=r"^params: pretrain.global_batch: 4096 does not split evenly over 3"):
        config.check_world_size(3)


def test_defaults_are_the_paper_recipe():
    config = parse()
    assert (config.arch, config.input_size, config.epochs, config.global_batch, config.warmup_epochs) == (
        "resnet50", 224, 1600, 4096, 40)
    assert config.peak_lr == pytest.approx(3.2e-3)  # 2e-4 * 4096 / 256
    assert (config.weight_decay, config.weight_decay_end, config.clip) == (0.04, 0.2, 5.0)


@pytest.mark.parametrize("arch, betas", [("resnet50", (0.9, 0.95)), ("convnext_base", (0.9, 0.999))])
def test_auto_betas_per_family(arch, betas):
    assert parse(arch=arch).adam_betas == betas
    assert parse(arch=arch, betas=[0.8, 0.9]).adam_betas == (0.8, 0.9)


def test_model_then_variant_then_dotted_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "pretrain": {"data": MISSING_DATA, "arch": "resnet18", "epochs": 10, "warmup_epochs": 1},
        "models": {"r50": {"pretrain": {"arch": "resnet50", "drop_path_rate": 0.05}}},
        "ablations": {"zero_out": {"encoder_mode": "zero_out", "epochs": 20}},
    }))
    config = pretrain_branch(params, ["pretrain.epochs=30"], model="r50", variant="zero_out")
    assert (config.arch, config.drop_path_rate, config.encoder_mode, config.epochs) == ("resnet50", 0.05, "zero_out", 30)
    assert pretrain_branch(params, variant="sparse").encoder_mode == "sparse"
    params.write_text(yaml.safe_dump({"pretrain": {"data": MISSING_DATA, "arch": "resnet18"},
                                      "models": {"resnet50": None, "convnext_base": {"pretrain": {"epochs": 300}}}}))
    assert pretrain_branch(params, model="resnet50").arch == "resnet50"  # a model is named by its arch
    assert (pretrain_branch(params, model="convnext_base").arch, pretrain_branch(params).arch) == (
        "convnext_base", "resnet18")
    with pytest.raises(ConfigError, match=r"params: ablations.nope: unknown variant"):
        pretrain_branch(params, variant="nope")


def test_resume_compatibility_ignores_operational_keys():
    recorded = {**vars(parse(num_workers=2, compile=False))}
    recorded["betas"] = "auto"
    assert parse(num_workers=16, compile=True, save_every=5).changed_keys(recorded) == []
    assert parse(epochs=10, warmup_epochs=1, mask_ratio=0.75).changed_keys(recorded) == [
        "epochs", "mask_ratio", "warmup_epochs"]
    # A checkpoint from before a key existed resumes when the key keeps its default, and only then.
    older = {k: v for k, v in recorded.items() if k != "encoder_kwargs"}
    assert parse().changed_keys(older) == []
    assert parse(encoder_kwargs={"output_stride": 16}).changed_keys(older) == ["encoder_kwargs"]
