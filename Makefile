# Two entry points on a fresh machine: `make reproduce` (the DAG on the embedded mini benchmark)
# and `make test`. Both create/update the local virtualenv first, pinned by requirements.lock.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
LOCK := requirements.lock

.PHONY: setup test mutants reproduce smoke report bench gpu-check cluster-check clean lock

setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml $(LOCK) workflow/scripts/install_detectron2.sh workflow/scripts/patch_detectron2.py \
		workflow/scripts/install_data_packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(LOCK) -e '.[dev]'
	bash workflow/scripts/install_detectron2.sh $(BIN)/python
	bash workflow/scripts/install_data_packages.sh
	touch $@

# Regenerate the lock from the tested .venv: the installed versions of what the project (with its dev extra) and
# Detectron2 require, transitively (so nothing installed there by hand), without the project, Detectron2 (the
# installer builds it), pip, setuptools and wheel, and without local version labels (+cpu, +cu130: PyPI has none).
# Then re-stamp the conda envs with the lock's sha256, so that Snakemake rebuilds them (tests/test_environment.py).
define LOCK_PY
import importlib.metadata as md
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as key

dists = {key(d.metadata["Name"]): d for d in md.distributions()}
todo, seen = [("spark-repro", ("dev",)), ("pb1-detectron2", ()), ("detectron2", ())], set()
while todo:
    name, extras = todo.pop()
    if (key(name), extras) in seen or key(name) not in dists:
        continue
    seen.add((key(name), extras))
    for req in map(Requirement, dists[key(name)].requires or []):
        if not req.marker or any(req.marker.evaluate({"extra": e}) for e in extras or ("",)):
            todo.append((req.name, tuple(sorted(req.extras))))
skip = {"spark-repro", "pb1-detectron2", "detectron2", "pip", "setuptools", "wheel"}
for name in sorted({name for name, _ in seen} - skip):
    print(f"{dists[name].metadata['Name']}=={dists[name].version.split('+')[0]}")
endef
export LOCK_PY

lock:
	{ sed -n '/^#/p' $(LOCK); $(BIN)/python -c "$$LOCK_PY"; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	sed -i -E "s/^(# requirements.lock sha256: ).*/\1$$(sha256sum $(LOCK) | cut -d' ' -f1)/" workflow/envs/*.yaml

# dvc.yaml is generated from the DAG's one definition (eval/pipeline/dag.py's Layout and every stage's imports,
# eval/pipeline/stage_code.py): `make dvc.yaml` rewrites it. Phony, since what it depends on is the whole code.
.PHONY: dvc.yaml
dvc.yaml: setup
	$(BIN)/python -m eval.pipeline.dvc_yaml

test: setup
	SPARK_TESTS_REQUIRE_ALL=1 $(BIN)/python -m pytest -q --durations=15

# Does the suite catch the mistakes that matter? Each deliberate breakage of tests/mutants.yaml is applied to a scratch
# copy and the tests named for it run there; every one must be caught. On demand, not in CI (about 10 min on 2 cores).
mutants: setup
	$(BIN)/python tests/mutants.py

reproduce: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores $(CORES)

smoke: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores $(CORES) --configfile configs/smoke.yaml

# After a run, Snakemake's report of it: report.html with the claims (table and forest plot), the paper's tables, the
# figures and the training curves per arm, each with its caption. Another preset's: make report PARAMS=configs/smoke.yaml
report: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --report report.html $(if $(PARAMS),--configfile $(PARAMS))

bench: setup
	$(BIN)/python bench/pretrain_step.py

# On a GPU machine, before a paper run: every path the run takes, checked in <= 8 minutes (bench/gpu_check.py).
gpu-check: setup
	$(BIN)/python bench/gpu_check.py

# The SLURM profile against a real SLURM (root: installs and starts a throwaway local cluster, stops it at the end):
# the smoke DAG through sbatch (its pretraining on 2 nodes under a 1-minute limit: stopped, resubmitted, resumed,
# bitwise as uninterrupted; a fine-tuning cancelled and resumed) and every paper job (1 and 4 nodes) through
# sbatch --test-only. About 4-5 minutes on 2 cores.
cluster-check: setup
	$(BIN)/python workflow/scripts/slurm/cluster_check.py

clean:
	rm -rf .snakemake runs results data/mini* logs
