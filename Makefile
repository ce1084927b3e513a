# The README's two commands: `make demo` and `make test`, on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench dev clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pullmode demo

test: $(STAMP)
	$(BIN)/ruff check pullmode_dagster pullmode_dagster_tests bench
	$(BIN)/ruff format --check pullmode_dagster pullmode_dagster_tests bench
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix pullmode_dagster pullmode_dagster_tests bench
	$(BIN)/ruff format pullmode_dagster pullmode_dagster_tests bench

bench: $(STAMP)
	$(BIN)/python bench/run.py

dev: $(STAMP)
	$(BIN)/pullmode demo --ui

clean:
	rm -rf $(VENV) .pullmode .pytest_cache .ruff_cache
