# layerprune: `make book` builds the book, `make test` runs the tests. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.layerprune-installed

.PHONY: setup assets test lint book help

PROFILE ?= default
MODEL   ?=
BOOK_ARGS := --profile $(PROFILE) $(if $(MODEL),-p model $(MODEL))

help:
	@echo "make setup  - create $(VENV), install the pinned stack, fetch and convert the embedded assets"
	@echo "make test   - setup, then run the test suite"
	@echo "make book   - setup, execute the notebooks (PROFILE=default, MODEL=...), build _build/html"
	@echo "make lint   - ruff over src, tests, bench and notebooks"

setup: $(STAMP) assets

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	$(BIN)/pip check
	touch $@

assets: $(STAMP)
	$(BIN)/layerprune setup

test: setup
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests notebooks $(wildcard bench)

book: setup
	$(BIN)/layerprune book $(BOOK_ARGS)
