# Self-documenting: `make help` lists every target with the text after its `##`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKA := $(PY) deploy/local-kafka/localkafka.py

.DEFAULT_GOAL := help
.PHONY: help install kafka-up kafka-down run test check lint typecheck schemas unit integration bench demo reliability clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# The compiled source mapping (native/, Rust): rebuilt whenever its sources change.
NATIVE_SOURCES := native/Cargo.toml native/Cargo.lock native/pyproject.toml native/autopilot_native.pyi $(wildcard native/src/*.rs)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(VENV)/.native: $(VENV)/.installed $(NATIVE_SOURCES)
	$(PY) -m pip install -q ./native
	touch $@

# Segment's Analytics.js from npm for the browser test, at the version tests/browser's lock pins.
# Without npm the browser test is skipped (and fails under CI).
BROWSER_DEPS := tests/browser/node_modules/.installed

$(BROWSER_DEPS): tests/browser/package.json tests/browser/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix tests/browser --no-audit --no-fund && touch $@; \
	else \
		echo "npm not found: tests/integration/test_ingest_browser.py will be skipped"; \
	fi

install: $(VENV)/.native $(BROWSER_DEPS) ## create .venv with the dev extras, build native/ (needs cargo), npm ci tests/browser

kafka-up: install ## start the local single-node Kafka (KRaft, no Docker) in the background
	$(KAFKA) up

kafka-down: ## stop the local Kafka
	$(KAFKA) down

run: install ## local Kafka + stand-in Autopilot API + the worker, until Ctrl-C
	$(PY) deploy/run-local.py

lint: install ## ruff lint and format check; import-linter's layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: install ## mypy --strict
	$(VENV)/bin/mypy worker tests
	$(VENV)/bin/mypy deploy/local-kafka/localkafka.py deploy/run-local.py deploy/demo.py

schemas: install ## regenerate schemas/ from the models
	$(PY) -m worker schemas

check: lint typecheck ## lint, types and schemas are current
	$(PY) -m worker schemas --check

test: check ## everything CI runs: check, then unit, golden and integration tests on a real broker
	$(VENV)/bin/pytest -q -m "not slow" --durations=15

unit: install ## unit and golden tests only (no broker)
	$(VENV)/bin/pytest -q tests/unit

integration: install ## integration tests only (real broker)
	$(VENV)/bin/pytest -q tests/integration -m "not slow"

bench: install ## benchmarks (not tests): prints a Markdown table, writes bench-results.json
	$(PY) -m tests.benchmarks

reliability: install ## the whole reliability suite, slow parts included
	$(VENV)/bin/pytest -q tests/integration -m "slow or reliability"

demo: install ## broker, stand-in API and worker; sends a realistic mix; prints a summary (DEMO_ARGS=--secured: over SASL_SSL)
	$(PY) deploy/demo.py $(DEMO_ARGS)

clean: ## remove the venv and caches (the Kafka jars and data too)
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache tests/browser/node_modules
