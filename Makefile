# The targets CI runs are the ones you run: `make up` starts Cove, `make test` checks it (.ci/run calls it).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: up test lint pytest services bench clean

# A virtual environment with Cove installed (editable) against the locked versions in constraints.txt: uv, or pip
# where uv cannot be had (scripts/install says why).
$(STAMP): pyproject.toml constraints.txt scripts/install
	PYTHON=$(PYTHON) scripts/install $(VENV)
	touch $(STAMP)

up: $(STAMP)
	$(VENV)/bin/cove up

test: $(STAMP) services lint pytest

# Services the tests use that the machine may lack (PostgreSQL binaries), installed with apt.
services:
	scripts/test-services
	scripts/install-helm

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/gateway_overhead.py
	$(PY) benchmarks/deploy_first_token.py
	$(PY) benchmarks/ui_render.py
	$(PY) benchmarks/hub_spawn.py
	$(PY) benchmarks/kube_reconcile.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
