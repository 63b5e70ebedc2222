# Firebreak: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNBOOK ?= system-outage
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test lint validate up stop clean

# Reinstall only when the dependency declarations change.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/firebreak validate
	$(BIN)/firebreak drill $(RUNBOOK)

test: setup
	$(BIN)/python -m pytest

# Bug-catching lint rules (ruff) and types (mypy) over the application packages; see pyproject.toml.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

validate: setup
	$(BIN)/firebreak validate

# The whole local stack: Prefect server + UI, the deployments, the intake on :8700; Ctrl-C stops it.
# `make up SIMULATOR=1` also serves the contact-centre simulator.
up: setup
	$(BIN)/firebreak up $(if $(SIMULATOR),--with-simulator)

stop:
	@test -x $(BIN)/firebreak && $(BIN)/firebreak server stop || true

clean: stop
	rm -rf $(VENV) var .pytest_cache
