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

test: $(STAMP) lint
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/taskactors demo

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV)
