# The targets CI runs are the ones you run: `make up` starts Cove, `make test` checks it (.ci/run calls it).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Python keeps the bytecode it compiles in the venv make made: uv installs without compiling every module, and where
# the environment turns caching off, every process would compile every module it imports, at every start.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: up test test-fast lint pytest pytest-fast services bench clean

# A virtual environment with Cove installed (editable) against the locked versions in constraints.txt: uv, or pip
# where uv cannot be had (scripts/install says why).
$(STAMP): pyproject.toml constraints.txt scripts/install
	PYTHON=$(PYTHON) scripts/install $(VENV)
	touch $(STAMP)

up: $(STAMP)
	$(VENV)/bin/cove up

test: $(STAMP) services lint pytest

# The loop while developing, about a minute here (69–72 s for about 1,050 tests): the same lint (mypy rechecks only
# what changed, about 5 s once its cache exists; 2.5 min to fill it) and the tests that start no model server or
# `cove` process, no JupyterHub and no browser, train no model and need no PostgreSQL (markers in pyproject.toml),
# spread over the cores (pytest-xdist).
# `make test` runs them all, one at a time, as CI does.
FAST_MARKERS := not runtime and not hub and not browser and not torch and not postgres and not redis
test-fast: $(STAMP) lint pytest-fast

# Services the tests use that the machine may lack (PostgreSQL binaries), installed with apt.
services:
	scripts/test-services
	scripts/install-helm

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The tests that start nothing spread over the cores; those that start servers, hubs and browsers run one at a
# time, as their timings assume. --durations: the slowest are named in every CI log, so a test that turns slow is seen.
pytest: $(STAMP)
	$(PY) -m pytest -n auto -m "$(FAST_MARKERS)" $(PYTEST_ARGS)
	$(PY) -m pytest --durations=25 -m "not ($(FAST_MARKERS))" $(PYTEST_ARGS)

pytest-fast: $(STAMP)
	$(PY) -m pytest -n auto -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/gateway_overhead.py
	$(PY) benchmarks/deploy_first_token.py
	$(PY) benchmarks/ui_render.py
	$(PY) benchmarks/hub_spawn.py
	$(PY) benchmarks/kube_reconcile.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
