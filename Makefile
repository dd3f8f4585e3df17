# The two commands README.md names: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,metrics,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check api tests examples bench
	$(BIN)/mypy api

test: lint
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .demo build *.egg-info

# Benchmarks against the peers, each printing its table (minutes; not part of `make test`).
bench: $(STAMP)
	$(BIN)/python bench/noop_boot.py
	$(BIN)/python bench/add_column.py
	$(BIN)/python bench/pool_overhead.py
	$(BIN)/python bench/health.py
