"""The finetune section: per-model recipes (tests/test_paper_recipes.py holds them to the authors' values), explicit
keys over them, one-line errors."""
import dataclasses

import pytest
import timm
import yaml

from eval.finetune import RECIPES, FinetuneConfig
from eval.pipeline.params import branch_config, load_params
from spark.config import ConfigError, to_dict

MISSING_DATA = "/nonexistent/imagenet"  # parsing must fail on the bad key, not on the data


def finetune_branch(path, overrides=(), **branch) -> FinetuneConfig:
    return branch_config(load_params(path), FinetuneConfig, overrides, **branch)

def parse(**finetune) -> FinetuneConfig:
    return FinetuneConfig.parse({"finetune": {"data": MISSING_DATA, **finetune}})


@pytest.mark.parametrize("arch", sorted(name for name in RECIPES if timm.is_model(name)))
def test_auto_recipe_is_the_one_named_like_arch(arch):
    config = parse(arch=arch)
    recipe = RECIPES[arch]
    assert config.recipe == arch
    assert all(getattr(config, f.name) == getattr(recipe, f.name) for f in dataclasses.fields(recipe))
    assert config.peak_lr == pytest.approx(recipe.base_lr * recipe.global_batch / 256)
    assert config.loss_name == ("bce" if recipe.optimizer == "lamb" else "ce")


def test_shared_recipe_values():
    config = parse()
    assert (config.arch, config.recipe, config.input_size) == ("resnet50", "resnet50", 224)
    assert config.peak_lr == pytest.approx(0.016)  # 2e-3 * 2048 / 256
    assert (config.cutmix, config.mix_switch_prob, config.label_smoothing) == (1.0, 0.5, 0.1)
    assert (config.augment, config.erase_prob, config.eval_crop, config.clip) == ("auto", 0.25, 0.95, 0.0)


def test_explicit_keys_override_the_recipe():
    config = parse(arch="resnet18", recipe="convnext_base", epochs=3, warmup_epochs=1, global_batch=64, loss="bce")
    assert (config.arch, config.recipe, config.optimizer) == ("resnet18", "convnext_base", "adamw")
    assert config.base_lr == 1e-4
    assert (config.epochs, config.global_batch, config.loss_name) == (3, 64, "bce")


@pytest.mark.parametrize("written, value", [("1e12", 1e12), ("2E3", 2000.0), (".5e2", 50.0), ("3.0e+1", 30.0)])
def test_floats_in_exponent_form_parse_as_floats(written, value):
    """YAML 1.1 (PyYAML) reads `1e12`, without an exponent sign, as a string: a float key takes it as the float."""
    assert parse(base_lr=yaml.safe_load(written)).base_lr == value
    with pytest.raises(ConfigError, match="finetune.base_lr: expected float, got 'e12'"):
        parse(base_lr="e12")


def test_auto_recipe_needs_an_arch_with_a_recipe():
    with pytest.raises(ConfigError, match=r"^params: finetune.recipe: no recipe is named like arch 'resnet18'"):
        parse(arch="resnet18")


@pytest.mark.parametrize("values, message", [
    ({"recipe": "resnet9000"}, "params: finetune.recipe: must be 'auto' or one of resnet50, "),
    ({"arch": "resnet_nope", "recipe": "resnet50"}, "params: finetune.arch: unknown timm architecture 'resnet_nope'"),
    ({"arch": "test_vit", "recipe": "resnet50"}, "params: finetune.layer_decay: layer-wise lr decay is defined for"),
    ({"optimizer": "sgd"}, "params: finetune.optimizer: must be one of 'lamb', 'adamw', got 'sgd'"),
    ({"warmup_epochs": 10, "epochs": 10}, "params: finetune.warmup_epochs: must be in [0, epochs=10)"),
    ({"layer_decay": 0.0}, "params: finetune.layer_decay: must be in (0, 1]"),
    ({"ema_decay": 1.0}, "params: finetune.ema_decay: must be in [0, 1)"),
    ({"eval_crop": 1.5}, "params: finetune.eval_crop: must be in (0, 1]"),
    ({"augment": "fancy"}, "params: finetune.augment: not 'auto', 'trivial', 'none' or a timm auto-augment spec"),
    ({"loss": "focal"}, "params: finetune.loss: must be one of 'auto', 'bce', 'ce'"),
    ({"precision": "fp16"}, "params: finetune.precision: must be one of 'auto', 'fp32', 'bf16'"),
    ({"epochs": "many"}, "params: finetune.epochs: expected int"),
    ({"lr": 0.1}, "params: finetune.lr: unknown key"),
])
def test_invalid_values_name_the_key(values, message):
    with pytest.raises(ConfigError) as err:
        parse(**values)
    assert str(err.value).startswith(message)


def test_layer_decay_of_one_accepts_any_timm_classifier():
    assert parse(arch="test_vit", recipe="convnext_base", layer_decay=1.0).layer_decay == 1.0


def test_each_process_needs_the_same_even_batch():
    config = parse()
    config.check_world_size(8)  # 256 per process
    with pytest.raises(ConfigError, match=r"^params: finetune.global_batch: 2048 does not split into an even batch"):
        config.check_world_size(3)
    with pytest.raises(ConfigError, match=r"^params: finetune.global_batch: 30 does not split into an even batch"):
        parse(global_batch=30).check_world_size(2)  # 15 per process: Mixup pairs images


def test_model_branch_then_overrides_then_recipe(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "finetune": {"data": MISSING_DATA, "epochs": 10, "warmup_epochs": 1},
        "models": {"r50": {"finetune": {"arch": "resnet50"}}, "cnb": {"finetune": {"arch": "convnext_base"}}},
    }))
    r50 = finetune_branch(params, ["finetune.epochs=30"], model="r50")
    assert (r50.arch, r50.epochs, r50.warmup_epochs, r50.base_lr) == ("resnet50", 30, 1, 2e-3)
    cnb = finetune_branch(params, model="cnb")
    assert (cnb.arch, cnb.epochs, cnb.optimizer, cnb.drop_path_rate) == ("convnext_base", 10, "adamw", 0.4)
    with pytest.raises(ConfigError, match=r"params: models.nope: unknown model"):
        finetune_branch(params, model="nope")


def test_resume_compatibility_ignores_operational_keys():
    recorded = to_dict(parse(num_workers=2))  # what a checkpoint records (tuples as lists)
    assert parse(num_workers=16, compile=True, micro_batch=8, save_every=5).changed_keys(recorded) == []
    assert parse(epochs=10, base_lr=1e-3).changed_keys(recorded) == ["base_lr", "epochs"]
