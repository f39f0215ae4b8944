"""SparK reproduction: prepare -> pretrain (method + ablations) -> fine-tune -> Mask R-CNN -> tables.

    snakemake --cores all [--use-conda]                       # params.yaml: the mini preset
    snakemake --cores all --configfile configs/smoke.yaml     # another preset (one whole params file)
    snakemake --workflow-profile workflow/profiles/slurm --configfile configs/paper.yaml

Every rule is a thin shell over a ``python -m`` entry point that reads the same params file as DVC's dvc.yaml;
the branches and their paths come from eval/dag.py.
"""
from pathlib import Path

from eval.dag import (
    METHOD, SCRATCH, Layout, detection_branches, finetune_branches, label_regimes, layout, pretrain_branches,
    pretrain_seed, workflow_params,
)
from eval.launch import stage_resources
from eval.stage_code import code_files
from spark.data.config import DataConfig
from spark.data.paths import classification_data, detection_data
from spark.config import branch_section, parse_section
from spark.provenance import params_hash

PARAMS_FILE, PARAMS = workflow_params(workflow.configfiles, config)
LAYOUT = layout(PARAMS)
DATA = parse_section(PARAMS, "data", DataConfig)
CLASSIFICATION_MANIFEST = str(classification_data(DATA).manifest)
DETECTION_MANIFEST = str(detection_data(DATA).manifest)
VARIANTS = [METHOD, *(PARAMS["ablations"] or {})]
LOGS = f"{LAYOUT.runs}/logs"


def resources_of(stage):
    """Snakemake resources of a stage: memory, runtime (minutes) and GPUs (the SLURM executor reads `gpu`)."""
    r = stage_resources(PARAMS, stage)
    return {"mem_mb": r.mem_mb, "runtime": r.runtime, "gpu": r.gpus}


def stage_code(stage):
    """The project files a stage's jobs run, as inputs: editing one reruns the jobs it can affect (as in DVC)."""
    return code_files(stage, Path(workflow.basedir))


def section_hash(stage, model=None, variant=None, regime=None):
    """The section a job reads, resolved for its branch and hashed: Snakemake's params rerun trigger reruns the
    job when it changes, and only then."""
    return params_hash(branch_section(PARAMS, stage, model, None if variant == METHOD else variant, regime)[stage])


wildcard_constraints:
    model="|".join(PARAMS["models"]),
    variant="|".join(VARIANTS),
    init="|".join([SCRATCH, *VARIANTS]),
    seed=r"\d+",
    regime="|".join(label_regimes(PARAMS)),


rule all:
    input:
        LAYOUT.results,


include: "workflow/rules/prepare.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/detection.smk"
include: "workflow/rules/tables.smk"
