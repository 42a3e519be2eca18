# tradegraph: one Makefile for setup, demo, tests, UI, lint and benchmarks.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home

.PHONY: install dagster-home demo test ui lint train bench bench-year clean postgres

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# the benchmark-only extra (vectorbt, for stepping_vs_vectorbt)
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[dev,bench]"
	touch $(BENCH_STAMP)

dagster-home: $(STAMP)
	$(BIN)/python -m dagster_project.instance >/dev/null

demo: $(STAMP) dagster-home
	$(BIN)/python -m dagster_project.commands.demo

train: $(STAMP)
	$(BIN)/python -m TRAINING.train

test: $(STAMP) postgres
	$(BIN)/python -m pytest

# Debian's PostgreSQL server binaries, for the deployment tests (they start their own server on a free port).
# Installed only when missing and only as root (CI); otherwise those tests skip and say why.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's postgresql (server binaries for the deployment tests)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	else echo "PostgreSQL server binaries missing; as root, 'make postgres' installs them (those tests skip)"; fi

ui: $(STAMP) dagster-home
	$(BIN)/python -m dagster_project.commands.ui

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(BENCH_STAMP) dagster-home
	$(BIN)/python -m dagster_project.commands.bench

# The research benchmarks on a generated year: 252 sessions × 100 symbols (docs/benchmarks.md: how long).
# State in var/bench/year: run it again after a failure and the finished phases are kept.
bench-year: $(BENCH_STAMP) dagster-home
	$(BIN)/python -m dagster_project.commands.bench_research --symbols 100 --sessions 252 --progress \
	  --work var/bench/year

clean:
	rm -rf var
