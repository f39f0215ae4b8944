"""``make gpu-check`` (bench/gpu_check.py): one line and exit code 2 without CUDA; on the CPU, at toy sizes, a
table and a JSON of every block, a failing block reported without stopping the others."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench/gpu_check.py"


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA device, on any machine
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def numbers(value):
    """Every number in a JSON value."""
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_without_cuda_it_says_so_in_one_line(tmp_path):
    result = gpu_check("--out", str(tmp_path))
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA device (torch "), lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_failing_block_leaves_the_others_running(tmp_path):
    """The pretraining block needs the data block's output: alone it fails with one line, and the next block runs."""
    result = gpu_check("--device", "cpu", "--tiny", "--blocks", "pretrain", "environment", "--out", str(tmp_path))
    assert result.returncode == 1
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["passed"] is False
    assert report["blocks"]["pretrain"]["status"] == "FAIL"
    assert report["blocks"]["pretrain"]["error"] == "no smoke data: the data block did not pass"
    assert report["blocks"]["environment"]["status"] == "PASS"
    assert "| pretrain | FAIL |" in result.stdout and "| environment | PASS |" in result.stdout
    assert (tmp_path / "pretrain.log").is_file()


@pytest.mark.slow
def test_cpu_blocks_at_toy_sizes(tmp_path):
    result = gpu_check("--device", "cpu", "--tiny", "--blocks", "environment", "data", "throughput",
                       "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["passed"] is True and list(report["blocks"]) == ["environment", "data", "throughput"]
    for block in report["blocks"].values():
        assert block["status"] == "PASS" and {"seconds", "limit_s", "summary", "found"} <= set(block)
    assert {"device", "torch", "torchvision", "cuda", "bf16"} <= set(report["blocks"]["environment"]["found"])
    steps = report["blocks"]["throughput"]["found"]
    assert {name.split()[-1] for name in steps} == {"dense", "sparse", "zero_out"}
    for step in steps.values():
        assert step["img_per_s"] > 0 and step["peak_mb"] > 0
    assert all(math.isfinite(x) for x in numbers(report))
    assert f"wrote {tmp_path / 'gpu-check.json'}" in result.stdout
