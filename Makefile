# Two entry points that work on a fresh Debian machine (Python 3.11, root):
#   make run   - the exporter with the demo API and bounded demo traffic
#   make test  - the whole test suite against real Prometheus/Alertmanager/PostgreSQL binaries
# Each installs what it needs: a venv with the project, and the Debian packages
# prometheus + prometheus-alertmanager + postgresql when their binaries are missing.
# `make` alone (or `make help`) lists every target; a target's line comes from
# its `## ` comment.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
LISTEN ?= 127.0.0.1:25279
# Two workers, one test file each at a time (module fixtures stay per file); PYTEST_ARGS= runs serially.
PYTEST_ARGS ?= -n 2 --dist loadfile
# The tests that reach the store, run a second time by `make test` with PostgreSQL as the store
# (tests/store_backend.py); `make test-postgres` runs the whole suite that way.
POSTGRES_TESTS ?= tests/store tests/api tests/server tests/demo tests/ingest tests/test_cli.py

.PHONY: help run test test-postgres stack bench bench-scrape bench-dashboards bench-ingest bench-middleware bench-store deps system-deps dashboards check clean
.DEFAULT_GOAL := help

help: ## list the targets (this text)
	@echo 'Usage: make <target>   (LISTEN=host:port for run; PYTHON=python3.11 to pick the interpreter)'
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z-]*:[^=]*## / {printf "  %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv </dev/null \
	  && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,deploy]'
	touch $@

deps: $(STAMP) ## create .venv and install the project with its test and deploy extras

system-deps: ## install Debian's prometheus, prometheus-alertmanager and postgresql when their binaries are missing
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null \
	    && command -v amtool >/dev/null \
	    && (command -v alertmanager >/dev/null || command -v prometheus-alertmanager >/dev/null); then \
	  echo "prometheus and alertmanager binaries present"; \
	else \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    prometheus prometheus-alertmanager </dev/null; \
	fi
	@# The tests start their own throwaway PostgreSQL server (tests/postgres.py) from Debian's binaries.
	@if command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "postgresql server binaries present"; \
	else \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    postgresql </dev/null; \
	fi

run: deps ## the exporter in demo mode on LISTEN (127.0.0.1:25279): demo API and demo traffic, until Ctrl-C
	$(VENV)/bin/clary-exporter --demo --listen-address $(LISTEN)

test: deps system-deps ## the whole suite on SQLite, then the store-facing tests on PostgreSQL (real binaries throughout)
	$(PY) -m pytest -q $(PYTEST_ARGS)
	CLARY_TEST_STORE=postgres $(PY) -m pytest -q $(PYTEST_ARGS) $(POSTGRES_TESTS)

test-postgres: deps system-deps ## the whole test suite with PostgreSQL as the store (CLARY_TEST_STORE=postgres)
	CLARY_TEST_STORE=postgres $(PY) -m pytest -q $(PYTEST_ARGS)

stack: deps system-deps ## exporter + Prometheus + Alertmanager on 127.0.0.1, no docker, until Ctrl-C
	$(PY) -m exporter.stack

bench: bench-scrape bench-dashboards bench-ingest bench-middleware ## all four benchmarks: scrape stall, dashboard build, ingest throughput, middleware overhead

bench-scrape: deps ## benchmark: event-loop stall while /metrics renders 1k-50k series
	$(PY) -m benchmarks.scrape_stall --seconds 6 --rounds 3

bench-dashboards: deps ## benchmark: time to build all dashboards in a fresh process
	$(PY) -m benchmarks.dashboards_build

bench-ingest: deps ## benchmark: event ingestion vs a bare JSON endpoint (one and varied label sets)
	$(PY) -m benchmarks.ingest_throughput --labels one
	$(PY) -m benchmarks.ingest_throughput --labels varied

bench-middleware: deps ## benchmark: request-metrics overhead vs bare aiohttp/Starlette and peers (installs wrk, peers)
	command -v wrk >/dev/null || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk </dev/null
	$(PY) -m pip install --quiet aiohttp-prometheus-exporter starlette-exporter prometheus-fastapi-instrumentator
	$(PY) -m benchmarks.middleware_overhead --duration 5 --rounds 3

bench-store: deps system-deps ## benchmark: feedback inserts/s and events/s on PostgreSQL vs SQLite (starts its own servers)
	flock /tmp/clary-bench.lock env PYTHONPATH=. $(PY) -m benchmarks.store_backends

dashboards: deps ## regenerate the dashboard JSON in provisioning/dashboards/
	$(VENV)/bin/clary-dashboards build

check: deps ## fail if the committed dashboard JSON differs from what the code generates
	$(VENV)/bin/clary-dashboards check

clean: ## remove .venv and test caches
	rm -rf $(VENV) .pytest_cache .hypothesis
