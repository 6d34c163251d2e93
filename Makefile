# The README's commands. Each target sets itself up (virtualenv, pip, apt) and is idempotent.
#   make demo        the offline demo (see README)
#   make test        the default test suite (< 15 min on 2 CPU cores)
#   make test-slow   the slow tests: multi-process training, the full demo profile, the installed wheel
#   make lint        ruff (lint + format check) and mypy, as configured in pyproject.toml
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# A CPU wheel of this torch lies on the CI/dev machines' disk; a GPU user installs their own torch
# into the venv first (see README) and this pin is then skipped with TORCH=.
TORCH  ?= torch==2.13.0
# espeak-ng speaks the offline corpus; chromium renders the HTML report in its test (headless)
APT_PACKAGES = espeak-ng chromium
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PROFILE ?= default
OUT     ?=

.PHONY: setup demo test test-slow lint clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@command -v espeak-ng >/dev/null && command -v chromium >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(APT_PACKAGES); }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/pip install -q $(TORCH))
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/audiopalm demo --profile $(PROFILE) $(if $(OUT),--out $(OUT))

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs
