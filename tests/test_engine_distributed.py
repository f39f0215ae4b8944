"""Process groups: the collective timeout a job sets, and GPU jobs that find no GPU."""
import re
from datetime import timedelta

import pytest
import torch

from helpers import detection_config
from spark.config import ConfigError
from spark.engine import distributed
from spark.engine.distributed import DEFAULT_TIMEOUT_MINUTES, distributed_env, require_gpus
from spark.pretrain import PretrainConfig


def test_the_process_group_waits_as_long_as_the_config_says(monkeypatch):
    """torchrun's rank 0 of 2 joins its group with the configured timeout (torch's NCCL default, 10 min, is
    shorter than 8 ranks compiling their first step), and leaves it at the end of the block."""
    joined, left = [], []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: joined.append((backend, kw)))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: left.append(True))
    with distributed_env(timeout_minutes=90) as env:
        assert env.world_size == 2 and env.is_distributed
    [(backend, kwargs)] = joined
    assert kwargs["timeout"] == timedelta(minutes=90) and kwargs["world_size"] == 2 and left == [True]
    assert backend == ("nccl" if torch.cuda.is_available() else "gloo")


def test_the_default_timeout_outlasts_a_first_compile():
    config = PretrainConfig(data="unused")
    assert config.dist_timeout_minutes == detection_config().dist_timeout_minutes == DEFAULT_TIMEOUT_MINUTES >= 60
    assert "dist_timeout_minutes" in config.RESUMABLE  # waiting longer does not change the trained weights
    with pytest.raises(ConfigError, match="dist_timeout_minutes: must be > 0"):
        PretrainConfig(data="unused", dist_timeout_minutes=0)


@pytest.mark.parametrize("visible, found", [(0, "found 0: "), (1, "found 1: only 1 CUDA device(s) visible")])
def test_a_job_asking_for_more_gpus_than_it_sees_is_refused(visible, found, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    expected = f"params: resources.pretrain.gpus: 2 GPU(s) asked for, {found}"
    with pytest.raises(ConfigError, match="^" + re.escape(expected)):
        require_gpus("resources.pretrain.gpus", 2)
    require_gpus("resources.pretrain.gpus", visible)  # as many as it sees: fine
    require_gpus("resources.pretrain.gpus", 0)  # a CPU job: fine


def test_a_cpu_build_of_torch_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ConfigError, match="built without CUDA"):
        require_gpus("--num-gpus", 1)
