# Hedgerow: `make run` starts the whole stack locally; `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test unit component e2e lint protos check-protos bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

protos: $(STAMP)
	$(PY) -m contract.generate

check-protos: $(STAMP)
	$(PY) -m contract.generate --check

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .

run: $(STAMP)
	$(PY) -m stack

test: check-protos lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

component: $(STAMP)
	$(PY) -m pytest -q tests/component

e2e: $(STAMP)
	$(PY) -m pytest -q tests/e2e

bench: $(STAMP)
	$(PY) -m bench run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
