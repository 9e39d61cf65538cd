# Two commands do everything on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up down status test install lock bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## Start the whole engine (embedded PostgreSQL, Redis, Ray, the Serve app) and print the login.
up: $(STAMP)
	$(BIN)/parlo up

## Stop everything `make up` started; data stays in .parlo/.
down: $(STAMP)
	$(BIN)/parlo down

status: $(STAMP)
	$(BIN)/parlo status

## Install (with test tools) and run the whole test suite.
test: $(STAMP)
	$(BIN)/python -m pytest -q

## Re-resolve pinned versions into requirements.lock after changing pyproject.toml.
lock:
	$(BIN)/pip-compile --quiet --extra dev --strip-extras -o requirements.lock pyproject.toml

bench: $(STAMP)
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) *.egg-info
