# Two entry points that work on a fresh Debian machine (Python 3.11, root):
#   make run   - the exporter with the demo API and bounded demo traffic
#   make test  - the whole test suite against real Prometheus/Alertmanager binaries
# Each installs what it needs: a venv with the project, and the Debian
# packages prometheus + prometheus-alertmanager when their binaries are missing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
LISTEN ?= 127.0.0.1:25279

.PHONY: run test stack bench bench-scrape bench-dashboards bench-ingest bench-middleware deps system-deps dashboards check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv </dev/null \
	  && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,deploy]'
	touch $@

deps: $(STAMP)

system-deps:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null \
	    && command -v amtool >/dev/null \
	    && (command -v alertmanager >/dev/null || command -v prometheus-alertmanager >/dev/null); then \
	  echo "prometheus and alertmanager binaries present"; \
	else \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    prometheus prometheus-alertmanager </dev/null; \
	fi

run: deps
	$(VENV)/bin/clary-exporter --demo --listen-address $(LISTEN)

test: deps system-deps
	$(PY) -m pytest -q

stack: deps system-deps
	$(PY) -m exporter.stack

bench: bench-scrape bench-dashboards bench-ingest bench-middleware

bench-scrape: deps
	$(PY) -m benchmarks.scrape_stall --seconds 6 --rounds 3

bench-dashboards: deps
	$(PY) -m benchmarks.dashboards_build

bench-ingest: deps
	$(PY) -m benchmarks.ingest_throughput --labels one
	$(PY) -m benchmarks.ingest_throughput --labels varied

bench-middleware: deps
	command -v wrk >/dev/null || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk </dev/null
	$(PY) -m pip install --quiet aiohttp-prometheus-exporter starlette-exporter prometheus-fastapi-instrumentator
	$(PY) -m benchmarks.middleware_overhead --duration 5 --rounds 3

dashboards: deps
	$(VENV)/bin/clary-dashboards build

check: deps
	$(VENV)/bin/clary-dashboards check

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
