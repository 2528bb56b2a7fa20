# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/gateway.toml

.PHONY: run test lint unit sysdeps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

sysdeps:
	./scripts/system-deps.sh

run: $(STAMP) sysdeps
	$(BIN)/gateway --config $(CONFIG) init
	$(BIN)/gateway --config $(CONFIG) serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) sysdeps lint
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP) sysdeps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
