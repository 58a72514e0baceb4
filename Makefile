# The two commands of the README: `make demo` and `make test`. Both create (or reuse) .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.clinicmm-installed
# The CPU build of torch, installed before the package so nothing pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0
DEMO_PATIENTS ?= 200

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip check
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/clinicmm demo-data demo_data --patients $(DEMO_PATIENTS) --seed 0
	$(BIN)/clinicmm run workflows/demo.yaml

# the house plan (import-linter: layer order, no cycles) and ruff (lint + format) first: they take seconds
test: install
	$(BIN)/lint-imports
	$(BIN)/ruff check clinicmm tests benchmarks scripts workflows
	$(BIN)/ruff format --check clinicmm tests benchmarks scripts workflows
	$(BIN)/python -m pytest

clean:
	rm -rf .clinicmm demo_data
