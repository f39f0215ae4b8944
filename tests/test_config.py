"""Field constraints: declared in a config dataclass's annotations, checked whenever it is built (parsed from
params or constructed in Python), with one line naming the key and the bound."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

import pytest

from eval.data import DataConfig, MiniCocoConfig
from helpers import detection_config
from eval.finetune import FinetuneConfig
from spark.config import Above, AtLeast, ConfigError, OneOf, Range, Section, parse_section
from spark.model import SparKConfig
from spark.pretrain import PretrainConfig


@dataclass
class Toy(Section):
    SECTION: ClassVar[str] = "toy"

    ratio: Annotated[float, Range(0, 1, "()")] = 0.5
    closed: Annotated[float, Range(0, 1)] = 0.5
    left_open: Annotated[float, Range(0, 1, "(]")] = 0.5
    count: Annotated[int, AtLeast(1)] = 1
    rate: Annotated[float, Above(0)] = 1.0
    mode: Literal["a", "b"] = "a"
    name: Annotated[str, OneOf("x", "y")] = "x"
    nested: MiniCocoConfig = field(default_factory=MiniCocoConfig)


@pytest.mark.parametrize("values, message", [
    ({"ratio": 1.0}, "ratio: must be in (0, 1), got 1.0"),
    ({"ratio": 0.0}, "ratio: must be in (0, 1), got 0.0"),
    ({"closed": 1.5}, "closed: must be in [0, 1], got 1.5"),
    ({"left_open": 0.0}, "left_open: must be in (0, 1], got 0.0"),
    ({"count": 0}, "count: must be >= 1, got 0"),
    ({"rate": 0.0}, "rate: must be > 0, got 0.0"),
    ({"mode": "c"}, "mode: must be one of 'a', 'b', got 'c'"),
    ({"name": "z"}, "name: must be one of 'x', 'y', got 'z'"),
])
def test_a_constraint_names_the_key_and_the_bound_when_built_and_when_parsed(values, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        Toy(**values)
    with pytest.raises(ConfigError, match=f"^{re.escape(f'params: toy.{message}')}$"):
        Toy.parse({"toy": values})


def test_bounds_are_inclusive_unless_opened():
    config = Toy(closed=0, left_open=1, count=1, rate=1e-9)
    assert (config.closed, config.left_open) == (0, 1)
    with pytest.raises(ConfigError, match=r"^params: toy\.nested\.max_objects: must be in \[1, 20\], got 21$"):
        Toy.parse({"toy": {"nested": {"max_objects": 21}}})


def test_drop_path_rate_is_the_same_rule_in_every_stage():
    message = r"drop_path_rate: must be in \[0, 1\), got 1\.0$"
    with pytest.raises(ConfigError, match="^" + message):
        SparKConfig(arch="resnet18", input_size=64, drop_path_rate=1.0)
    with pytest.raises(ConfigError, match="^" + message):
        detection_config(drop_path_rate=1.0)
    with pytest.raises(ConfigError, match="^params: pretrain." + message):
        parse_section({"pretrain": {"data": "x", "drop_path_rate": 1.0}}, "pretrain", PretrainConfig)
    with pytest.raises(ConfigError, match="^params: finetune." + message):
        FinetuneConfig.parse({"finetune": {"data": "x", "drop_path_rate": 1.0}})


@pytest.mark.parametrize("build, message", [
    (lambda: detection_config(backbone="vit"), "backbone: must be one of 'resnet', 'timm', got 'vit'"),
    (lambda: detection_config(num_workers=-1), "num_workers: must be >= 0, got -1"),
    (lambda: PretrainConfig(data="x", vis_images=-1), "vis_images: must be >= 0, got -1"),
    (lambda: PretrainConfig(data="x", precision="fp16"), "precision: must be one of 'auto', 'fp32', 'bf16'"),
    (lambda: DataConfig(workers=0), "workers: must be >= 1, got 0"),
])
def test_configs_built_in_python_are_checked_too(build, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        build()
