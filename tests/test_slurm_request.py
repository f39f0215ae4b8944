"""What a job asks SLURM for under workflow/profiles/slurm: the sbatch options that snakemake-executor-plugin-slurm
builds (its own get_submit_command and set_gres_string) from the resources the Snakefile gives each stage
(eval/pipeline/resources.py), for the paper preset. One task per job, with all the job's threads and GPUs: the job
starts its own process per GPU (torchrun). On several nodes, one task per node with the node's threads and GPUs:
srun starts one torchrun per node in it (eval/pipeline/launch.py). `make cluster-check` submits the same calls to a
real SLURM."""
from __future__ import annotations

import copy
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import require

from eval.pipeline.params import load_params
from eval.pipeline.resources import snakemake_resources, snakemake_threads, stage_resources
from eval.pipeline.stages import STAGES

submit_string = require("snakemake_executor_plugin_slurm.submit_string")
plugin_utils = require("snakemake_executor_plugin_slurm.utils")

REPO = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
PAPER = load_params(REPO / "configs/paper.yaml")


class Resources(dict):
    """A job's resources as the plugin reads them (``.get`` and attributes)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def sbatch_options(stage: str, defaults: dict, params: dict = PAPER) -> dict[str, str]:
    """The resource options of the plugin's sbatch call for a paper job of ``stage``: ``defaults`` (the profile's
    default-resources), overridden by the rule's resources, overridden by the profile's set-resources."""
    r = stage_resources(params, stage)
    resources = Resources({**defaults, **snakemake_resources(r), **(PROFILE.get("set-resources") or {}).get(
        stage, {})})
    job = SimpleNamespace(resources=resources, threads=snakemake_threads(r), name=stage,
                          is_group=lambda: False, wildcards=[])
    params = {"run_uuid": "uuid", "slurm_logfile": "log", "comment_str": "comment", "account": "",
              "partition": f"-p {resources['slurm_partition']}", "workdir": "."}
    call = submit_string.get_submit_command(job, params) + plugin_utils.set_gres_string(job)
    words, options = shlex.split(call)[1:], {}
    while words:
        word = words.pop(0)
        if "=" in word:
            key, _, options[key] = word.partition("=")
        else:
            options[word] = words.pop(0) if words and not words[0].startswith("-") else ""
    return options


@pytest.mark.parametrize("tasks_default", [None, 1], ids=["profile", "profile+tasks=1"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_paper_job_is_one_task_with_all_its_threads_and_gpus(stage, tasks_default):
    """Also with a ``tasks: 1`` default (common in SLURM profiles), which the plugin turns into
    ``--ntasks-per-gpu=1`` for a GPU job unless the job says otherwise: 8 tasks of 80 CPUs, which SLURM refuses."""
    defaults = dict(PROFILE["default-resources"])
    if tasks_default is not None:
        defaults["tasks"] = tasks_default
    options = sbatch_options(stage, defaults)
    r = stage_resources(PAPER, stage)
    assert "--ntasks-per-gpu" not in options and "--ntasks-per-node" not in options and "--gpus-per-task" not in options
    assert options.get("--ntasks", "1") == "1"  # one task (sbatch's default when not given)
    assert options["--cpus-per-task"] == str(r.threads)
    assert options.get("--gpus") == (str(r.gpus) if r.gpus else None)
    assert options["--mem"] == str(r.mem_mb) and options["-t"] == str(r.runtime)


def test_the_paper_preset_asks_for_gpus_where_it_trains():
    """The test above is not vacuous: the paper's training stages are 8-GPU jobs of 64-80 threads."""
    assert {s: (stage_resources(PAPER, s).gpus, stage_resources(PAPER, s).threads) for s in
            ("pretrain", "finetune", "detection")} == {"pretrain": (8, 80), "finetune": (8, 80), "detection": (8, 64)}


def with_nodes(stage: str, nodes: int) -> dict:
    params = copy.deepcopy(PAPER)
    params["resources"][stage]["nodes"] = nodes
    return params


@pytest.mark.parametrize("tasks_default", [None, 1], ids=["profile", "profile+tasks=1"])
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_a_multi_node_job_is_one_task_per_node_with_its_threads_and_gpus(stage, tasks_default):
    """resources.pretrain.nodes: 4 of the paper preset: 4 nodes, 4 tasks (one per node) of 80 CPUs, 8 GPUs on
    EACH node (--gres, per node; --gpus would be 8 in all) and 480 GB on each (--mem is per node)."""
    defaults = dict(PROFILE["default-resources"])
    if tasks_default is not None:
        defaults["tasks"] = tasks_default
    options = sbatch_options(stage, defaults, with_nodes(stage, 4))
    assert options["--nodes"] == "4" and options["--ntasks"] == "4"
    assert options["--cpus-per-task"] == "80"
    assert options["--gres"] == "gpu:8" and "--gpus" not in options
    assert "--ntasks-per-gpu" not in options and "--gpus-per-task" not in options and "--cpus-per-gpu" not in options
    assert options["--mem"] == "480000" and options["-t"] == str(stage_resources(PAPER, stage).runtime)


def test_a_multi_node_job_runs_its_command_in_the_batch_script():
    """The plugin's job step (snakemake-executor-plugin-slurm-jobstep) wraps a job's command in ``srun -n1
    --cpus-per-task=T --gpus=G`` unless the job has an ``mpi`` resource: that step would hold the first node's
    CPUs and GPUs, and launch.py's own srun over every node could not start. A one-node job keeps that wrap."""
    assert "mpi" in snakemake_resources(stage_resources(with_nodes("pretrain", 2), "pretrain"))
    assert "mpi" not in snakemake_resources(stage_resources(PAPER, "pretrain"))
    assert "nodes" not in snakemake_resources(stage_resources(PAPER, "pretrain"))  # the one-node request as before


def test_a_multi_node_cpu_job_asks_for_no_gpus():
    params = copy.deepcopy(PAPER)
    params["resources"]["pretrain"].update(nodes=2, gpus=0, threads=4)
    options = sbatch_options("pretrain", dict(PROFILE["default-resources"]), params)
    assert options["--nodes"] == "2" and options["--ntasks"] == "2" and options["--cpus-per-task"] == "4"
    assert "--gres" not in options and "--gpus" not in options
