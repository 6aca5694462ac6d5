# tvlars — run `make help` for the targets. Every target creates .venv on first use.
PY      ?= python3
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# gpu-check runs offline on a GPU node: .venv's Python if there is one, else the node's own (torch preinstalled)
GPU_PY  ?= $(if $(wildcard $(PYTHON)),$(PYTHON),$(PY))

.PHONY: help install test test-fast lint bench train reproduce-table tables gpu-check gpu-wheels clean

TABLE    ?= fmnist-mini
LAUNCHER ?= joblib
PROFILE  ?= full

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install tvlars with its dev tools

test: $(STAMP)  ## run the whole test suite (the CI command)
	$(PYTHON) -m pytest -q

test-fast: $(STAMP)  ## skip the slow end-to-end tests
	$(PYTHON) -m pytest -q -m "not slow"

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check tvlars tests scripts

bench: $(STAMP)  ## loop vs bare PyTorch, sampler vs device data path, optimizer step costs (CPU or GPU)
	$(PYTHON) scripts/bench.py

train: $(STAMP)  ## one run; pass Hydra overrides with ARGS="dataset=cifar10 optimizer=lars ..."
	$(PYTHON) -m tvlars.train $(ARGS)

reproduce-table: $(STAMP)  ## sweep TABLE (LAUNCHER=joblib|basic|submitit_local|submitit_slurm, PROFILE=full|smoke) → results/
	$(PYTHON) scripts/reproduce_table.py --table $(TABLE) --launcher $(LAUNCHER) --profile $(PROFILE) $(ARGS)

tables: $(STAMP)  ## rebuild results/TABLE from existing records (SOURCE=runs/TABLE or wandb:<entity>/<project>)
	$(PYTHON) scripts/make_tables.py --table $(TABLE) $(if $(SOURCE),--source $(SOURCE))

gpu-check:  ## on a GPU node, offline: the GPU check (<= 8 min; report.md in $OUT or gpu-check/; ARGS="--dry-run")
	$(GPU_PY) scripts/gpu_check.py $(ARGS)

gpu-wheels: $(STAMP)  ## where pip reaches PyPI: the pure-Python wheels a torch-only GPU node lacks -> .gpu/wheels
	$(PYTHON) scripts/gpu_check.py --fetch-wheels

clean:  ## remove caches (keeps .venv, runs/ and data/)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
