# Everything installs into .venv from this project's own files; targets install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/clientela demo

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/realdata.py
	$(BIN)/python benchmarks/quality.py
	$(BIN)/python benchmarks/personas.py
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/spark.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/training.py --customers 1120000 --end-to-end
	$(BIN)/python benchmarks/scoring.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/snapshot.py
