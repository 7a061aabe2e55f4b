# make dev  — run the hub on the embedded default (SQLite + local blobs)
# make test — lint, type-check and run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/modalhub dev

lint: $(STAMP)
	$(BIN)/ruff check backend tests bench modal_apps
	$(BIN)/ruff format --check backend tests bench modal_apps

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .modalhub .pytest_cache .mypy_cache .ruff_cache
