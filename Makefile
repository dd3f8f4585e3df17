# The two commands README.md names: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,metrics,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check api tests examples
	$(BIN)/mypy api

test: lint
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .demo build *.egg-info
