# Two commands on a fresh machine (see README):
#   make demo   generate a synthetic stream and ingest it, printing a summary
#   make test   run the test suite
# Both create the virtual environment on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RAY_AUTH_MODE ?= disabled

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python jobs/demo.py --out out/demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf out .pytest_cache
