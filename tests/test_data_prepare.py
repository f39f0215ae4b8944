"""The prepare CLI: config validation, a full tiny build, actionable errors, and the package install script."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from spark.config import ConfigError, parse_section
from eval.data.config import DataConfig
from eval.data.paths import classification_data, detection_data
from eval.cli import main as spark_cli
from helpers import counting_reads, run_bounded


def main(argv: list[str], prog: str = "spark prepare") -> int:
    assert prog == "spark prepare"  # the one CLI names every command the same way
    return spark_cli(["prepare", *argv])

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
REPO = Path(__file__).resolve().parents[1]
TINY = {
    "seed": 3,
    "workers": 2,
    "mini_in": {"image_size": 32, "classes": 3, "train_per_class": 2, "val_per_class": 1},
    "mini_coco": {"image_size": 48, "train_images": 3, "val_images": 2, "max_objects": 3},
}


def _params(tmp_path: Path, **data) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "data"), **TINY, **data}}))
    return path


def test_cli_builds_both_datasets_where_later_stages_look(tmp_path, capsys):
    params = _params(tmp_path)
    with counting_reads(params) as reads:
        assert main(["--params", str(params), "data.mini_in.train_per_class=3"]) == 0
    assert len(reads) == 1, reads  # the job reads its params once
    cfg = parse_section(yaml.safe_load(_params(tmp_path).read_text()), "data", DataConfig)
    images, coco = classification_data(cfg), detection_data(cfg)
    assert f"wrote {images.manifest}" in capsys.readouterr().out
    assert len(list(images.train.rglob("*.png"))) == 3 * 3 and len(list(images.val.rglob("*.png"))) == 3
    assert json.loads(images.manifest.read_text())["config"]["train_per_class"] == 3  # the override took effect
    assert len(json.loads(coco.val.annotations.read_text())["images"]) == 2
    assert (coco.manifest.parent / "contact_sheet.png").is_file()


@pytest.mark.parametrize("override, message", [
    ("data.mini_in.image_size=16", "params: data.mini_in.image_size: must be >= 32, got 16"),
    ("data.mini_in.classes=11", "params: data.mini_in.classes: must be in [1, 10], got 11"),
    ("data.classification=cifar", "params: data.classification: must be one of 'mini-in', 'imagenet'"),
    ("data.workers=0", "params: data.workers: must be >= 1, got 0"),
])
def test_bad_config_fails_naming_the_key(tmp_path, capsys, override, message):
    assert main(["--params", str(_params(tmp_path)), override]) == 2  # bad input
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_defaults_are_the_mini_preset():
    cfg = parse_section({"data": {}}, "data", DataConfig)
    assert (cfg.classification, cfg.detection) == ("mini-in", "mini-coco")
    assert (cfg.mini_in.image_size, cfg.mini_in.train_per_class, cfg.mini_in.val_per_class) == (128, 500, 100)
    with pytest.raises(ConfigError, match="data.mini_coco.max_objects: must be in"):
        parse_section({"data": {"mini_coco": {"max_objects": 0}}}, "data", DataConfig)


def test_missing_fashion_mnist_fails_with_the_install_command(tmp_path, capsys):
    params = _params(tmp_path, fashion_mnist=str(tmp_path / "nowhere"))
    assert main(["--params", str(params)], prog="spark prepare") == 2
    err = capsys.readouterr().err
    assert err.startswith("spark prepare: error: Fashion-MNIST not found")
    assert "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" in err


def test_missing_user_dataset_fails_naming_it(tmp_path, capsys):
    params = _params(tmp_path, classification="imagenet", imagenet={"root": str(tmp_path / "imagenet")})
    assert main(["--params", str(params)]) == 2
    assert f"{tmp_path / 'imagenet'}: dataset folder not found" in capsys.readouterr().err


def test_install_script_is_idempotent_once_the_package_is_present():
    script = REPO / "workflow" / "scripts" / "install_data_packages.sh"
    assert os.access(script, os.X_OK)
    assert Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()
    result = run_bounded(["bash", str(script)], timeout=300)  # killed, and the test failed, if it stalls (apt locks)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
