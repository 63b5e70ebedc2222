# Firebreak: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNBOOK ?= system-outage
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test coverage fuzz chaos lint validate up stop clean

# Reinstall only when the dependency declarations change.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/firebreak validate
	$(BIN)/firebreak drill $(RUNBOOK)

# Two pytest processes (xdist, a whole test file each at a time), each with its own Prefect server:
# most tests wait on a server, a runner or a receiver, so two keep both cores busy.
TEST_PROCESSES ?= 2
test: setup
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

# The suite under coverage (subprocesses included); prints the least-covered modules and the total.
# Not part of `make test`: coverage's tracer makes the suite about a third slower.
coverage: setup
	@rm -rf .coverage-data && mkdir -p .coverage-data
	$(BIN)/coverage run -m pytest -n $(TEST_PROCESSES) --dist loadfile
	@$(BIN)/coverage combine -q
	@$(BIN)/coverage report --skip-covered --sort=cover | tail -n 15

# A longer hunt for hostile intake bodies than the suite's: 10,000 per endpoint and database.
fuzz: setup
	FIREBREAK_FUZZ_EXAMPLES=10000 $(BIN)/python -m pytest tests/intake/test_intake_fuzz.py

# Chaos tests (tests/chaos/): the intake SIGKILLed during a 2,000-alert burst; Prefect, then the records
# database, stopped while alerts arrive; a worker SIGKILLed at three random steps, then its runs resumed; an
# unreachable outage drilled. Not part of `make test` (pytest's default selection is -m 'not chaos'); minutes.
chaos: setup
	$(BIN)/python -m pytest -m chaos -s tests/chaos

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

# Everything `firebreak up` started (its pid files under var/run/) and the local Prefect server.
stop:
	@test -x $(BIN)/firebreak && $(BIN)/firebreak down || true

clean: stop
	rm -rf $(VENV) var .pytest_cache .coverage-data
