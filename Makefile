# onecard: the two set-up commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_INSTANCE ?= instance-demo
PACKAGE_FILES := requirements-dev.txt constraints.txt core/pyproject.toml $(wildcard plugins/*/pyproject.toml) scripts/install-system-deps.sh

.PHONY: install demo test lint format typecheck pytest bench postgres clean i18n

## install: system packages (apt, as root on Debian) and .venv with the core and all plugins, editable
install: $(STAMP)

$(STAMP): $(PACKAGE_FILES)
	bash scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements-dev.txt
	touch $(STAMP)

## demo: a demo installation on the embedded SQLite default, served on http://$(HOST):$(PORT)/
demo: install
	$(BIN)/onecard --instance $(DEMO_INSTANCE) demo --host $(HOST) --port $(PORT)

## test: lint, type-check and run every test (starts PostgreSQL if needed)
test: install postgres lint typecheck pytest

postgres: install
	bash scripts/ensure-postgres.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest

## i18n: merge the console's Chinese translation parts and compile the catalog
i18n: install
	$(BIN)/python -m onecard.console.catalog

## bench: every benchmark under bench/, each ending with a RESULT line
bench: install postgres
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_INSTANCE) build core/build plugins/*/build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
