PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check actors storage tests bench
	$(BIN)/ruff format --check actors storage tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q tests/test_layout.py

test: $(STAMP) lint
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/taskactors demo

# QUICK=1: the small version (under a minute). Peers: pip install -e '.[bench]'.
bench: $(STAMP)
	@QUICK=$(QUICK) $(BIN)/python -m bench

# The seeded simulation over many more seeds than `make test` runs (200).
SEEDS ?= 5000
soak: $(STAMP)
	$(BIN)/python -c "import sys, actors.testing as t; sys.exit(t.soak(range(1000, 1000 + $(SEEDS))) > 0)"

clean:
	rm -rf $(VENV)
