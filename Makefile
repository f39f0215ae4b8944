# Two entry points on a fresh machine: `make reproduce` (the DAG on the embedded mini benchmark)
# and `make test`. Both create/update the local virtualenv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: setup test reproduce smoke bench clean

setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml workflow/scripts/install_detectron2.sh workflow/scripts/install_data_packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	bash workflow/scripts/install_detectron2.sh $(BIN)/python
	bash workflow/scripts/install_data_packages.sh
	touch $@

test: setup
	$(BIN)/python -m pytest -q

reproduce: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores $(CORES)

smoke: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores $(CORES) --configfile configs/smoke.yaml

bench: setup
	$(BIN)/python bench/pretrain_step.py

clean:
	rm -rf .snakemake runs results data/mini* logs
