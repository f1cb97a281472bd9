# kposture: the two commands of the README, and the steps they are made of.
# Everything is installed by these targets themselves: a Python virtualenv from PyPI (pinned by
# constraints.txt), Kafka jars from Maven Central, Kubernetes binaries built from Go modules.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test faults venv env lint typecheck imports unit integration schemas clean down

demo: venv
	$(BIN)/kposture demo

test: venv lint typecheck imports
	$(BIN)/kposture dev up --clusters 2
	$(BIN)/python -m pytest -m "not faults"

faults: venv
	$(BIN)/kposture dev up --clusters 2
	$(BIN)/python -m pytest -m faults

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

env: venv
	$(BIN)/kposture dev up --clusters 2

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

imports: venv
	$(BIN)/lint-imports

unit: venv
	$(BIN)/python -m pytest tests/unit

integration: env
	$(BIN)/python -m pytest tests/integration tests/e2e

schemas: venv
	$(BIN)/python -m kposture.schemas.jsonschemas schemas/json

down: venv
	$(BIN)/kposture dev down

clean: down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
