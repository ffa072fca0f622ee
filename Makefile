# layerprune: `make book` builds the book, `make test` runs the tests. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.layerprune-installed

.PHONY: setup assets test test-fast lint format book bench help

PROFILE ?= default
MODEL   ?=
BOOK_ARGS := --profile $(PROFILE) $(if $(MODEL),-p model $(MODEL))
BENCH_PROFILE ?= smoke
BENCH_ARGS ?=
BENCH_MODEL := $(if $(MODEL),--model $(MODEL))

help:
	@echo "make setup  - create $(VENV), install the pinned stack, fetch and convert the embedded assets"
	@echo "make test   - setup, then run the test suite (every tier)"
	@echo "make test-fast - the unit tier: no book builds, no embedded pretrained model (a few minutes)"
	@echo "make book   - setup, execute the notebooks (PROFILE=default, MODEL=...), build _build/html"
	@echo "make bench  - setup, run every benchmark in bench/ (MODEL=..., BENCH_PROFILE=smoke for the book's timing)"
	@echo "make lint   - ruff check and ruff format --check over src, tests, bench and notebooks"
	@echo "make format - ruff format and the import order, in place"

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

test-fast: $(STAMP)
	$(BIN)/pytest -m "not integration and not book"

LINTED := src tests notebooks $(wildcard bench)

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff check --select I --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

book: setup
	$(BIN)/layerprune book $(BOOK_ARGS)

bench: setup
	$(BIN)/python bench/profiling.py $(BENCH_MODEL) $(BENCH_ARGS)
	$(BIN)/python bench/inference.py $(BENCH_MODEL) $(BENCH_ARGS)
	$(BIN)/python bench/healing.py $(BENCH_MODEL) $(BENCH_ARGS)
	$(BIN)/python bench/healing_profile.py $(BENCH_MODEL) $(BENCH_ARGS)
	$(BIN)/python bench/evaluation.py $(BENCH_MODEL) $(BENCH_ARGS)
	$(BIN)/python bench/sweep.py $(BENCH_MODEL) $(BENCH_ARGS)
	$(BIN)/python bench/precision.py $(BENCH_MODEL) $(BENCH_ARGS)
	$(BIN)/python bench/utilization.py $(BENCH_MODEL) $(BENCH_ARGS)
	$(BIN)/python bench/memory.py $(BENCH_MODEL) $(BENCH_ARGS)
	$(BIN)/python bench/kernel_starts.py
	$(BIN)/python bench/book.py --profile $(BENCH_PROFILE)
