# Two commands: `make run` starts the demo, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run serve test lint typecheck bench clean

$(BIN)/python:
	@sh scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/karkhana demo

serve: $(VENV)/.run-installed
	$(BIN)/karkhana serve

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check karkhana tests $(wildcard bench)
	$(BIN)/ruff format --check karkhana tests $(wildcard bench)

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
