"""How a training job starts its processes: one per GPU under torchrun, on one node or on several.

One node (``resources.<stage>.nodes: 1``): ``torchrun --standalone`` with ``gpus`` processes. Several nodes: the
job runs inside a SLURM allocation of that many nodes, ``srun`` starts one torchrun per node, and the torchruns meet
through torch's c10d rendezvous, hosted on the node that runs the job's script (SLURM's first node of the
allocation). Global ranks, data shards, seeds and the batch split then follow from the world size exactly as on one
node, and global rank 0 alone writes the run directory (a filesystem every node shares).

Why torchrun per node rather than SLURM starting every rank (``srun --ntasks-per-node GPUS``, ranks from
``SLURM_PROCID``): each node then runs what a one-node job runs (the same launcher, worker environment and failure
handling: one failed rank stops every node), and nothing depends on how a site binds srun's tasks to GPUs and cores.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from typing import Mapping

from spark.config import ConfigError

from .resources import StageResources

TORCHRUN = (sys.executable, "-m", "torch.distributed.run")
RENDEZVOUS_PORTS = (29500, 9500)  # base, span: the job id picks a port, so jobs sharing a node differ


def launch_command(stage: str, resources: StageResources, argv: list[str],
                   environ: Mapping[str, str] = os.environ) -> list[str]:
    """The command that runs ``spark ARGV`` (this job) once per GPU of every node of ``resources``."""
    program = ["-m", "eval.cli", *argv]
    if resources.nodes == 1:
        return [*TORCHRUN, "--standalone", "--nproc_per_node", str(resources.gpus), *program]
    job, nodes = environ.get("SLURM_JOB_ID"), allocated_nodes(environ)
    if job is None or nodes != str(resources.nodes):
        found = f"SLURM_JOB_NUM_NODES={nodes}" if job else "no SLURM allocation"
        raise ConfigError(f"params: resources.{stage}.nodes: {resources.nodes} nodes asked for, this job has "
                          f"{found}; run it through the SLURM profile (or inside salloc --nodes "
                          f"{resources.nodes})")
    port = RENDEZVOUS_PORTS[0] + int(job) % RENDEZVOUS_PORTS[1]
    step = ["srun", f"--nodes={resources.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            *([f"--cpus-per-task={resources.threads}"] if resources.threads else []),
            *([f"--gres=gpu:{resources.gpus}"] if resources.gpus else [])]
    return [*step, *node_command(resources, f"{socket.gethostname()}:{port}", job, program)]


def allocated_nodes(environ: Mapping[str, str]) -> str | None:
    """The number of nodes of this SLURM job: SLURM_JOB_NUM_NODES, or where the job's environment lacks it (the
    Snakemake SLURM plugin's job step drops every SLURM_* variable but the job id before it runs a job's command),
    what squeue reports for SLURM_JOB_ID."""
    if "SLURM_JOB_NUM_NODES" in environ or "SLURM_JOB_ID" not in environ or not shutil.which("squeue"):
        return environ.get("SLURM_JOB_NUM_NODES")
    try:
        return subprocess.run(["squeue", "-h", "-j", environ["SLURM_JOB_ID"], "-o", "%D"], capture_output=True,
                              text=True, timeout=60).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def node_command(resources: StageResources, endpoint: str, run_id: str, program: list[str]) -> list[str]:
    """What one node of a multi-node job runs: torchrun starting ``python PROGRAM`` once per GPU, joining the
    other nodes at ``endpoint`` (host:port) under ``run_id``."""
    return [*TORCHRUN, "--nnodes", str(resources.nodes), "--nproc_per_node", str(max(resources.gpus, 1)),
            "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", run_id, "--max_restarts", "0",
            *program]
