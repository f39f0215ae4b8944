#!/usr/bin/env bash
# Detectron2 for the conda env of detectron2.yaml, by the same installer as `make setup`.
#
# Snakemake (9.x, snakemake/deployment/conda.py) runs `<env>.post-deploy.sh` beside `<env>.yaml` once, right after
# it created the env: it copies this file to <conda-prefix>/<hash>.post-deploy.sh and runs that copy as
# `source <conda>/bin/activate <env>; <interpreter from the shebang> <copy>`, from the workflow's working
# directory. So $CONDA_PREFIX is the env and $PWD the checkout, but this file's own directory says nothing (set
# SPARK_REPRO_ROOT when running Snakemake with --directory elsewhere). A failure here removes the env again.
#
# Snakemake hashes this file with the yaml, not the installer: the pin and patch level below (kept equal to
# install_detectron2.sh and patch_detectron2.py by tests/test_environment.py) make a new pin rebuild the env.
# pin: pb1-detectron2==0.6 sha256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29 patch-level=2
set -euo pipefail

: "${CONDA_PREFIX:?detectron2.post-deploy.sh: no CONDA_PREFIX; Snakemake runs this with the conda env activated}"
ROOT=${SPARK_REPRO_ROOT:-$PWD}
INSTALLER="$ROOT/workflow/scripts/install_detectron2.sh"
[[ -f $INSTALLER ]] || {
    echo "detectron2.post-deploy.sh: $INSTALLER not found; run Snakemake from the checkout or set SPARK_REPRO_ROOT" >&2
    exit 1
}
exec bash "$INSTALLER" "$CONDA_PREFIX/bin/python"
