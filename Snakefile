"""SparK reproduction: prepare -> pretrain (method + ablations) -> fine-tune -> Mask R-CNN (scratch, supervised, SparK)
-> report.

    snakemake --cores all [--use-conda]                       # params.yaml: the mini preset
    snakemake --cores all --configfile configs/smoke.yaml     # another preset (one whole params file)
    snakemake --workflow-profile workflow/profiles/slurm --configfile configs/paper.yaml

Every rule is a thin shell over ``python -m eval.cli STAGE``, the command dvc.yaml runs, on the same params file.
The stages and their branches come from eval/pipeline/stages.py (one generic rule for every training stage:
workflow/rules/training.smk), and every path (outputs, logs, benchmarks) from the Layout of eval/pipeline/dag.py,
called here with wildcards; eval/pipeline/dvc_yaml.py calls both with DVC's placeholders to write dvc.yaml.
"""
import json
import os
import shlex
import sys
from pathlib import Path

from eval.arms import METHOD, SCRATCH, SUPERVISED
from eval.data.config import DataConfig
from eval.data.paths import prepared_data
from eval.pipeline.engines import adopt
from eval.pipeline.dag import CAPTIONS, EXHIBITS, Branch, label_regimes, layout, pretrain_seed
from eval.pipeline.params import branch_section
from eval.pipeline.resources import snakemake_resources, snakemake_threads, stage_resources
from eval.pipeline.resubmissions import resubmissions
from eval.pipeline.stage_code import code_files
from eval.pipeline.stages import training_stages, workflow_params
from spark.provenance import ENGINE_VARIABLE, params_hash

os.environ[ENGINE_VARIABLE] = "snakemake"  # each run.json names the engine that ran it
PARAMS_FILE, PARAMS = workflow_params(workflow.configfiles, config)
LAYOUT = layout(PARAMS)
PREPARED = prepared_data(DataConfig.parse(PARAMS))
MANIFESTS = {kind: str(getattr(PREPARED, kind).manifest) for kind in ("classification", "detection")}
VARIANTS = [METHOD, *(PARAMS["ablations"] or {})]


ESTIMATE = json.loads(Path(LAYOUT.estimate).read_text()) if Path(LAYOUT.estimate).exists() else None
CLUSTER_SCALE = any(r.gpus or r.nodes > 1 for r in (stage_resources(PARAMS, s.name) for s in training_stages()))
if ESTIMATE is None and CLUSTER_SCALE and workflow.is_main_process:  # GPU presets: where jobs meet time limits
    print(f"No cost estimate at {LAYOUT.estimate}: a failed training job is resubmitted as --retries says (the SLURM "
          f"profile: once); for runs longer than their job's time limit, write one first: spark estimate --params "
          f"{PARAMS_FILE}", file=sys.stderr)


def retries_of(stage):
    """How often a training stage's failed or stopped job is resubmitted: with a cost estimate, as many times as
    its longest run needs jobs within its time limit, plus one spare (eval/pipeline/resubmissions.py;
    this overrides --retries); without one, what --retries says (None). Only Snakemake's main process resubmits:
    inside a cluster job (the SLURM plugin's job step runs the rule in a Snakemake of its own) a retry would rerun
    the command in the same job, past its time limit."""
    if not workflow.is_main_process:
        return 0
    return None if ESTIMATE is None else resubmissions(PARAMS, stage, ESTIMATE)


def resources_of(stage):
    """Snakemake resources of a stage: memory, runtime (minutes) and GPUs; under the SLURM executor one task with
    all of them and the job's threads (eval/pipeline/resources.py: snakemake_resources)."""
    return snakemake_resources(stage_resources(PARAMS, stage))


def threads_of(stage):
    """The threads a stage's job gets (one where params.yaml leaves them to torch's default); SLURM: the task's
    --cpus-per-task."""
    return snakemake_threads(stage_resources(PARAMS, stage))


def stage_code(stage):
    """The project files a stage's jobs run, as inputs: editing one reruns the jobs it can affect (as in DVC)."""
    return code_files(stage, Path(workflow.basedir))


def section_hash(section, model=None, variant=None, regime=None):
    """The section a job reads, resolved for its branch and hashed: Snakemake's params rerun trigger reruns the
    job when it changes, and only then."""
    return params_hash(branch_section(PARAMS, section, model, variant, regime)[section])


wildcard_constraints:
    model="|".join(PARAMS["models"]),
    init="|".join([SCRATCH, SUPERVISED, *VARIANTS]),
    seed=r"\d+",
    regime="|".join(label_regimes(PARAMS)),


def adopt_into_dvc():
    """When Snakemake stops, DVC adopts every stage whose outputs it leaves up to date (eval/pipeline/adopt.py):
    dvc.lock then holds the runs, and `dvc status` / `dvc repro` go on from them instead of computing them again."""
    if workflow.is_main_process:
        dag = workflow.dag
        done = [str(path) for job in dag.jobs if dag.noneedrun_finished(job) for path in job.output]
        print(adopt(done, PARAMS_FILE, PARAMS), file=sys.stderr)


onsuccess:
    adopt_into_dvc()


onerror:
    adopt_into_dvc()


report: "workflow/report/workflow.rst"  # the front page of `snakemake --report` (`make report`)


rule all:
    input:
        LAYOUT.results,


include: "workflow/rules/prepare.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/report.smk"
