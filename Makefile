# The README's two commands: `make ui` and `make test`. Both are idempotent: they
# create .venv and install into it only when pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STORE ?=

.PHONY: ui test test-fast chromium sample-runs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# `make ui` installs the dashboard and the training extra, so that a rerun launched from
# the browser can train; `pip install .` alone is enough to browse and score a store.
.make/install: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train]'
	@mkdir -p .make && touch $@

.make/install-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,hf,dev,spark,report]'
	@mkdir -p .make && touch $@ .make/install

# Debian's Chromium for the browser test (never `playwright install`: it downloads).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

## Open the dashboard on ./trainmap_runs (or $TRAINMAP_STORE); the shipped sample runs when empty.
ui: .make/install
	$(BIN)/trainmap ui $(if $(STORE),--store $(STORE),)

## Install everything (dev extras, Chromium) and run the whole test suite.
test: .make/install-dev chromium
	$(BIN)/python -m pytest -q

## The suite without training runs and the browser.
test-fast: .make/install-dev
	$(BIN)/python -m pytest -q -m "not slow and not browser"

sample-runs: .make/install
	$(BIN)/python scripts/make_sample_runs.py

clean:
	rm -rf .make .pytest_cache
