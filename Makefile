# Two entry points for a fresh machine: `make run` and `make test` (and `make demo`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
CONFIG ?= config/gateway.toml

.PHONY: run demo test lint unit sysdeps sysdeps-run bench clean

# What running needs: the package alone.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $(RUN_STAMP)

# What testing needs: the package and its test tools.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

sysdeps-run:
	./scripts/system-deps.sh run

sysdeps:
	./scripts/system-deps.sh test

run: $(RUN_STAMP) sysdeps-run
	$(BIN)/gateway --config $(CONFIG) init
	$(BIN)/gateway --config $(CONFIG) serve

demo: $(RUN_STAMP) sysdeps-run
	$(BIN)/gateway demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) sysdeps lint
	$(BIN)/pytest -q -p no:cacheprovider -n 4 --durations=30

# Bytecode cached as an installed package has it (an environment that sets
# PYTHONDONTWRITEBYTECODE would recompile every changed module at each start).
bench: $(STAMP) sysdeps
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
