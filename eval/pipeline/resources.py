"""``resources.<stage>``: what one job of a stage asks the scheduler for, and gets.

Snakemake reads it for its ``threads`` and ``resources`` (:func:`snakemake_threads`, :func:`snakemake_resources`:
memory, runtime, GPUs; under the SLURM executor, one task with all of them); a training job itself
(``spark pretrain|finetune|detection``, :mod:`eval.cli`) runs with ``threads / max(gpus, 1)`` torch threads per
process (when set) and, with ``gpus > 1``, one process per GPU (torchrun; Detectron2 launches its own workers).
So a job runs the same under Snakemake, DVC and by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from spark.config import AtLeast, Checked, ConfigError, parse_section

@dataclass(frozen=True)
class StageResources(Checked):
    """What one job of a stage asks the scheduler for, per node. ``gpus > 1`` or ``nodes > 1`` launches the stage
    under torchrun with one process per GPU (:mod:`eval.pipeline.launch`; Detectron2: its own launcher, one
    node)."""

    gpus: Annotated[int, AtLeast(0)] = 0  # per node
    nodes: Annotated[int, AtLeast(1)] = 1
    threads: Annotated[int | None, AtLeast(1)] = None  # per node; None: torch's default by hand, one under Snakemake
    mem_mb: Annotated[int, AtLeast(1)] = 4000  # per node
    runtime: Annotated[int, AtLeast(1)] = 60  # minutes: the job's time limit (a longer run continues in the next job)

    @property
    def launches_processes(self) -> bool:
        """Whether the job runs under a launcher (several processes, or several nodes)."""
        return self.gpus > 1 or self.nodes > 1

    @property
    def threads_per_process(self) -> int | None:
        return None if self.threads is None else max(self.threads // max(self.gpus, 1), 1)


def stage_resources(params: dict[str, Any], stage: str) -> StageResources:
    section = {"resources": (params.get("resources") or {}).get(stage) or {}}
    try:
        return parse_section(section, "resources", StageResources)
    except ConfigError as err:
        raise ConfigError(str(err).replace("params: resources.", f"params: resources.{stage}.", 1)) from None


def snakemake_threads(resources: StageResources) -> int:
    """The ``threads`` of a stage's Snakemake job (one where params.yaml leaves them to torch's default); the SLURM
    executor asks for them as ``--cpus-per-task``."""
    return resources.threads or 1


def snakemake_resources(resources: StageResources) -> dict[str, int | str]:
    """The ``resources`` of a stage's Snakemake job: memory (MB, per node), runtime (minutes: the time limit) and
    GPUs; for several nodes, the nodes and their tasks.

    One node, under the SLURM executor (snakemake-executor-plugin-slurm): ONE task with all the job's threads
    (``--cpus-per-task``) and all its GPUs (``--gpus``), as the job expects: it starts its own process per GPU
    (torchrun; Detectron2's launcher). ``tasks_per_gpu: 0`` keeps the plugin from asking for tasks per GPU
    instead (``--ntasks-per-gpu``: its default in 1.x, and what a ``tasks`` resource turns into for a GPU job in
    2.x): each such task would get all the threads (8 tasks x 80 CPUs) and SLURM refuses the job ("Requested
    node configuration is not available").

    N nodes: ``--nodes=N --ntasks=N`` (so one task per node), each task with the node's threads
    (``--cpus-per-task``) and each node with its GPUs (``--gres=gpu:G``: per node, where ``--gpus`` would be the
    job's total). The ``mpi`` resource makes it what the plugin calls an MPI job: the plugin's job step then runs
    the rule's command directly in the batch script, where ``srun`` (:mod:`eval.pipeline.launch`) starts one
    torchrun per node in the whole allocation, instead of wrapping the command in an ``srun -n1`` step that would
    hold the first node's CPUs and GPUs (and, on one node only, could not start the others). ``make cluster-check``
    submits these requests to a real SLURM.
    """
    mapped: dict[str, int | str] = {"mem_mb": resources.mem_mb, "runtime": resources.runtime}
    if resources.nodes == 1:
        mapped["gpu"] = resources.gpus
    else:
        mapped.update(nodes=resources.nodes, tasks=resources.nodes, mpi="srun")
        if resources.gpus:
            mapped["gres"] = f"gpu:{resources.gpus}"
    if resources.gpus:
        mapped["tasks_per_gpu"] = 0
    return mapped
