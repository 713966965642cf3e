# The two commands a newcomer runs: `make run` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_WORKERS ?= auto

.PHONY: run test bootstrap lint typecheck imports format ci clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "engineroom needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

bootstrap: $(STAMP)

run: bootstrap
	$(BIN)/engineroom migrate
	$(BIN)/engineroom serve --host $(HOST) --port $(PORT)

test: bootstrap
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

lint: bootstrap
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: bootstrap
	$(BIN)/mypy

imports: bootstrap
	$(BIN)/lint-imports

format: bootstrap
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

ci: test lint typecheck imports

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
