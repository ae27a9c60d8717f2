# Two entry points for a fresh machine: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

.PHONY: install run test unit faults lint services chromium promtool bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet --compile-bytecode
	touch $@

install: $(VENV)/.synced

# Prism (npm) validates provider traffic against the official OpenAPI specs in the tests;
# axe-core (npm) checks every page and email for accessibility in the browser tests.
node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# `make run PORT=8080` when 8000 is taken; links in messages follow (CAMPAIGNS_PUBLIC_URL).
PORT ?= 8000
run: export CAMPAIGNS_PUBLIC_URL ?= http://127.0.0.1:$(PORT)
run: install
	$(VENV)/bin/campaigns migrate
	$(VENV)/bin/campaigns demo --seed
	$(VENV)/bin/campaigns serve --port $(PORT)

services:
	scripts/ensure-services

chromium:
	scripts/ensure-chromium

# promtool checks and unit-tests the Prometheus alert rules (tests/contract/test_monitoring.py).
promtool:
	scripts/ensure-promtool

# Line coverage of campaigns and workers, measured in the test process (pyproject.toml says
# why); the floor sits a little below the figure of the last full run (docs/decisions.md).
COVERAGE_FLOOR := 84

test: install node_modules/.installed services chromium promtool
	$(VENV)/bin/pytest --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)

# The fast loop: pure rules and content, no services needed.
unit: install
	$(VENV)/bin/pytest tests/unit tests/content -q

# The fault suite alone (also part of `make test`).
faults: install services
	$(VENV)/bin/pytest tests/faults

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install services
	$(VENV)/bin/python -m bench.enroll
	$(VENV)/bin/python -m bench.dispatch
	$(VENV)/bin/python -m bench.providers
	$(VENV)/bin/python -m bench.inbound
	$(VENV)/bin/python -m bench.faults
	$(VENV)/bin/python -m bench.horizon
	$(VENV)/bin/python -m bench.patient_list
	$(VENV)/bin/python -m bench.import_csv
	$(VENV)/bin/python -m bench.message_log
	$(VENV)/bin/python -m bench.reports
	$(VENV)/bin/python -m bench.broadcast

clean:
	rm -rf $(VENV) $(TOOLS) campaigns.db
