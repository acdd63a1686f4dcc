# The two commands a new user needs: `make demo` and `make test`. Each sets everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: demo test install dovecot lint

$(BIN)/sequencer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/sequencer

demo: install
	$(BIN)/sequencer demo

# Dovecot is what many users run: the end-to-end suite runs against it when it can be installed,
# and skips those cases with a reason when it cannot.
dovecot:
	@command -v dovecot >/dev/null 2>&1 || command -v /usr/sbin/dovecot >/dev/null 2>&1 || \
	  ( $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd ) || \
	  echo "warning: could not install dovecot-imapd; Dovecot tests will be skipped"

test: install dovecot
	$(BIN)/ruff check sequencer tests
	$(BIN)/mypy
	$(BIN)/pytest -n auto

lint:
	$(BIN)/ruff check sequencer tests
	$(BIN)/ruff format --check sequencer tests
	$(BIN)/mypy
