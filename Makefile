PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint docs demo bench soak clean

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

# The API reference, from the docstrings, in docs/_build/html; a warning
# fails the build (tests/test_docs.py builds it in make test too).
docs: $(STAMP)
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

test: $(STAMP) lint
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/taskactors demo

# QUICK=1: the small version (under a minute). Peers: pip install -e '.[bench]'.
bench: $(STAMP)
	@QUICK=$(QUICK) $(BIN)/python -m bench

# The seeded simulation over many more seeds than `make test` runs (200).
SEEDS ?= 5000
# Then (issue #17) SIGKILL torture, embedded and served; RSS under fuzz; the hostile fuzz, long.
soak: $(STAMP)
	$(BIN)/python -c "import sys, actors.testing as t; sys.exit(t.soak(range(1000, 1000 + $(SEEDS))) > 0)"
	timeout 600 $(BIN)/python -m tests.soak.torture_sqlite --tasks 40 --kills 20
	timeout 600 $(BIN)/python -m tests.soak.torture_server --tasks 40 --kills 10
	timeout 900 $(BIN)/python -m tests.soak.memory_soak --rounds 20 --warmup 10
	TASKACTORS_FUZZ_FRAMES=20000 TASKACTORS_FUZZ_TASKS=100 timeout 600 $(BIN)/pytest -q tests/actors/test_hostile.py

clean:
	rm -rf $(VENV)
