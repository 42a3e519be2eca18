# tradegraph: one Makefile for setup, demo, tests, UI, lint and benchmarks.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home

.PHONY: install dagster-home demo test ui lint train bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

dagster-home: $(STAMP)
	$(BIN)/python -m dagster_project.instance >/dev/null

demo: $(STAMP) dagster-home
	$(BIN)/python -m dagster_project.commands.demo

train: $(STAMP)
	$(BIN)/python -m TRAINING.train

test: $(STAMP)
	$(BIN)/python -m pytest

ui: $(STAMP) dagster-home
	$(BIN)/python -m dagster_project.commands.ui

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP) dagster-home
	$(BIN)/python -m dagster_project.commands.bench

clean:
	rm -rf var
