# owsync: developer and packaging entry points.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DESTDIR ?=
PREFIX ?= /usr

.PHONY: all venv test lint format demo bench install clean

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: venv lint
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" sh scripts/demo.sh

bench: venv
	$(BIN)/python bench/sync_bench.py

install:
	$(PYTHON) -m pip install --no-deps --no-compile --ignore-installed --root="$(if $(DESTDIR),$(DESTDIR),/)" --prefix="$(PREFIX)" .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
