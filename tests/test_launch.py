"""How a job starts its processes: torchrun on one node, srun + one torchrun per node on several."""
import socket
import sys

import pytest

from eval.cli import main
from eval.pipeline.launch import launch_command
from eval.pipeline.resources import StageResources
from spark.config import ConfigError
from spark.errors import BAD_INPUT

ARGV = ["pretrain", "--params", "p.yaml", "--out", "run"]


def test_one_node_runs_torchrun_standalone():
    command = launch_command("pretrain", StageResources(gpus=8, threads=80), ARGV, environ={})
    assert command == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "8",
                       "-m", "eval.cli", *ARGV]


def test_several_nodes_run_one_torchrun_per_node_under_srun():
    """4 nodes of 8 GPUs (the authors' 32 A100s): srun starts one task per node with the node's threads and GPUs;
    each runs torchrun with 8 processes, meeting at this node under the job's id."""
    resources = StageResources(gpus=8, nodes=4, threads=80)
    command = launch_command("pretrain", resources, ARGV, environ={"SLURM_JOB_ID": "123456",
                                                                   "SLURM_JOB_NUM_NODES": "4"})
    endpoint = f"{socket.gethostname()}:{29500 + 123456 % 9500}"
    assert command == [
        "srun", "--nodes=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=80", "--gres=gpu:8",
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "4", "--nproc_per_node", "8",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "123456", "--max_restarts", "0",
        "-m", "eval.cli", *ARGV]


@pytest.mark.parametrize("environ, found", [({}, "no SLURM allocation"),
                                            ({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1"},
                                             "SLURM_JOB_NUM_NODES=1")])
def test_several_nodes_need_an_allocation_of_that_many(environ, found):
    with pytest.raises(ConfigError, match=f"^params: resources.pretrain.nodes: 2 nodes asked for, this job has "
                                          f"{found}; run it through the SLURM profile"):
        launch_command("pretrain", StageResources(nodes=2), ARGV, environ=environ)


def test_detection_runs_on_one_node(tmp_path, capsys, monkeypatch):
    import shutil
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    shutil.copy(Path(__file__).parents[1] / "configs/smoke.yaml", "params.yaml")
    assert main(["detection", "--params", "params.yaml", "--init", "scratch", "--out", "run",
                 "resources.detection.nodes=2"]) == BAD_INPUT
    assert "params: resources.detection.nodes: detection runs on one node" in capsys.readouterr().err
