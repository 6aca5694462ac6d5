# tvlars — run `make help` for the targets.
# Environment: the active virtualenv ($VIRTUAL_ENV) or conda env ($CONDA_PREFIX) when there is one, else .venv
# (created on first use); tvlars is pip-installed into it once (`make VENV=<dir>` picks another).
PY      ?= python3
VENV    ?= $(or $(VIRTUAL_ENV),$(CONDA_PREFIX),.venv)
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.tvlars-installed
# Datasets: `make data` gets DATASETS into DATA_ROOT (the runs' data_root); see docs/data.md.
DATA_ROOT ?= $(or $(TVLARS_DATA),data)
DATASETS  ?= fashion_mnist
DATA_ARGS ?= $(DATASETS)
# gpu-check runs offline on a GPU node: the environment's Python if there is one, else the node's own (torch preinstalled)
GPU_PY  ?= $(if $(wildcard $(PYTHON)),$(PYTHON),$(PY))

.PHONY: help install data test test-fast lint bench train reproduce-table tables gpu-check gpu-wheels clean

TABLE    ?= fmnist-mini
LAUNCHER ?= joblib
PROFILE  ?= full

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PYTHON) || { $(PY) -m venv $(VENV) && $(PYTHON) -m pip install --quiet --upgrade pip; }
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## install tvlars with its dev tools into the active env (or a new .venv)

data: $(STAMP)  ## get DATASETS (default fashion_mnist) into DATA_ROOT: present, else apt-get as root, else download
	$(PYTHON) scripts/get_data.py $(DATA_ARGS) --root $(DATA_ROOT)

test: $(STAMP) data  ## run the whole test suite (the CI command)
	$(PYTHON) -m pytest -q

test-fast: $(STAMP) data  ## skip the slow end-to-end tests
	$(PYTHON) -m pytest -q -m "not slow"

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check tvlars tests scripts

bench: $(STAMP)  ## loop vs bare PyTorch, sampler vs device data path, optimizer step costs (CPU or GPU)
	$(PYTHON) scripts/bench.py

train: $(STAMP)  ## one run; pass Hydra overrides with ARGS="dataset=cifar10 optimizer=lars ..."
	$(PYTHON) -m tvlars.train $(ARGS)

reproduce-table: DATA_ARGS = --table $(TABLE) --profile $(PROFILE)
reproduce-table: $(STAMP) data  ## sweep TABLE into runs/ (LAUNCHER=joblib|basic|submitit_*, PROFILE=full|smoke, ARGS=--continue) → results/, compared with the committed table
	$(PYTHON) -m tvlars.tables.reproduce --table $(TABLE) --launcher $(LAUNCHER) --profile $(PROFILE) $(ARGS)

tables: $(STAMP)  ## rebuild results/TABLE from records (SOURCE= default runs/TABLE, else results/TABLE/runs; or wandb:<entity>/<project>)
	$(PYTHON) -m tvlars.tables.build --table $(TABLE) $(if $(SOURCE),--source $(SOURCE)) $(ARGS)

gpu-check:  ## on a GPU node, offline: the GPU check (<= 8 min; report.md in $OUT or gpu-check/; ARGS="--dry-run")
	$(GPU_PY) scripts/gpu_check.py $(ARGS)

gpu-wheels: $(STAMP)  ## where pip reaches PyPI: the pure-Python wheels a torch-only GPU node lacks -> .gpu/wheels
	$(PYTHON) scripts/gpu_check.py --fetch-wheels

clean:  ## remove caches (keeps .venv, runs/ and data/)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
