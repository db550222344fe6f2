# airflow-mlpipe: `make demo` runs the main job, `make test` the whole suite (both set up what they need).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8080

.PHONY: demo stop test test-unit lint install system

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip >/dev/null
	@$(PY) -m pip install -q --disable-pip-version-check uv
	@$(VENV)/bin/uv pip install -q --python $(PY) -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

# System pieces the full suite uses: podman (Docker Engine API), a python3 image, chromium, services.
system:
	@bash scripts/setup_system.sh

demo: install
	@$(PY) scripts/demo.py --port $(PORT)

stop:
	@$(PY) scripts/stop.py

test: install system
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	@$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# ruff, then the layer contracts of pyproject.toml (import-linter)
lint: install
	@$(VENV)/bin/ruff check airflow_mlpipe tests benchmarks scripts dags_examples
	@$(VENV)/bin/lint-imports
