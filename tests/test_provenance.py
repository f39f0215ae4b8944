"""run.json says exactly what ran: the commit of the code (or why there is none) and the software versions."""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spark.provenance import recorded_run, software

REPO = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def commit_seen_from(root: Path) -> str:
    """``git_commit()`` as a run from a copy of the package at ``root`` records it."""
    code = "from spark.provenance import git_commit; print(git_commit())"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_commit_is_that_of_the_code_that_ran_or_says_why_not(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "spark", copy / "spark", ignore=shutil.ignore_patterns("__pycache__"))
    assert commit_seen_from(copy) == f"unknown ({copy} is not a git checkout of the code, nor was it installed " \
                                     "from a VCS URL)"
    for args in (["init", "-q"], ["add", "spark"], ["commit", "-qm", "code"]):
        subprocess.run([*GIT, "-C", str(copy), *args], check=True, capture_output=True, timeout=60)
    head = subprocess.run(["git", "-C", str(copy), "rev-parse", "HEAD"], capture_output=True, text=True,
                          timeout=60).stdout.strip()
    assert commit_seen_from(copy) == head and len(head) == 40
    with (copy / "spark" / "loss.py").open("a") as f:
        f.write("# edited\n")
    assert commit_seen_from(copy) == head + "+dirty"


def test_run_json_records_versions_hardware_and_the_stage_additions(tmp_path):
    with recorded_run(tmp_path, "finetune", {"lr": 1.0}, seed=3) as info:
        info["precision"] = "fp32"
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["stage"] == "finetune" and record["seed"] == 3 and record["precision"] == "fp32"
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["cpu_capability"] in record["hardware"] or torch.cuda.is_available()
    versions = record["software"]
    assert set(versions) == {"python", "torch", "torchvision", "timm", "numpy", "detectron2", "cuda", "cudnn"}
    assert versions["torch"] == torch.__version__ and versions == software()
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["wall_time_s"] >= 0 and len(record["params_hash"]) == 12


@pytest.mark.parametrize("env, expected", [({}, "by hand"), ({"SPARK_ENGINE": "snakemake"}, "snakemake"),
                                           ({"DVC_STAGE": "pretrain@resnet18", "SPARK_ENGINE": "snakemake"}, "dvc")])
def test_run_json_names_the_engine_and_host_that_ran_the_job(tmp_path, monkeypatch, env, expected):
    for name in ("SPARK_ENGINE", "DVC_STAGE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with recorded_run(tmp_path, "pretrain", {}, seed=0):
        pass
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["engine"] == expected and record["host"] == platform.node() != ""


def test_no_run_json_for_a_failed_block(tmp_path):
    try:
        with recorded_run(tmp_path, "pretrain", {}, seed=0):
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert not (tmp_path / "run.json").exists()
