"""LAMB parameter groups: no weight decay on 1-D parameters, biases and mask tokens; lr scaling."""
import pytest
from timm.optim import Lamb

from spark.model import SparKConfig, build_spark
from spark.config import parse_section
from spark.pretrain import PretrainConfig
from spark.pretrain.optim import build_optimizer, param_groups


@pytest.fixture(scope="module")
def model():
    return build_spark(SparKConfig(arch="test_resnet", input_size=64, decoder_width=64))


def test_groups_cover_every_parameter_once(model):
    decay, no_decay = param_groups(model)
    names = [n for n, _ in decay["params"]] + [n for n, _ in no_decay["params"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert (decay["weight_decay_scale"], no_decay["weight_decay_scale"]) == (1.0, 0.0)


def test_exempt_from_decay(model):
    decay, no_decay = param_groups(model)
    exempt = dict(no_decay["params"])
    assert all(p.ndim > 1 and not n.endswith(".bias") and "mask_token" not in n for n, p in decay["params"])
    assert {n for n in exempt if n.endswith("mask_token")} == {n for n, _ in model.named_parameters() if n.endswith("mask_token")}
    assert any(n.endswith("mask_token") for n in exempt) and all(exempt[n].ndim == 4 for n in exempt if n.endswith("mask_token"))
    assert "decoder.head.bias" in exempt and "encoder.bn1.weight" in exempt
    assert "decoder.head.weight" not in exempt and "encoder.conv1.weight" not in exempt


def test_lamb_with_reference_hyperparameters(model):
    config = parse_section({"pretrain": {"data": "x", "arch": "test_resnet", "input_size": 64, "decoder_width": 64,
                                         "global_batch": 512}}, "pretrain", PretrainConfig)
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, Lamb)
    assert optimizer.defaults["lr"] == pytest.approx(2e-4 * 512 / 256)
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    assert optimizer.defaults["max_grad_norm"] is None  # clipping (5) happens in the train step
    assert "param_names" in optimizer.state_dict()["param_groups"][0]
