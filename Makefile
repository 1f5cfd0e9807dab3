# Two commands on a fresh machine (see README):
#   make demo   the whole pipeline on synthetic footage, ending with a report page (out/demo/report/index.html)
#   make test   run the test suite
# Both create the virtual environment on first use and install the system packages the
# project needs (system-deps: chromium, which the tests use to render the report).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
export RAY_AUTH_MODE ?= disabled

.PHONY: demo test install system-deps bench-deps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# Debian's chromium (headless) renders the report in tests/test_main_job.py; installed once, as root.
system-deps:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		echo "system-deps: installing chromium and a font (apt-get)"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium fonts-dejavu-core >/dev/null; \
	fi

# The benchmarks' second decode anchor and B-frame re-encoding (bench/ingest.py): Debian's ffmpeg CLI.
bench-deps: install
	@if ! command -v ffmpeg >/dev/null; then \
		echo "bench-deps: installing ffmpeg (apt-get)"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; \
	fi

demo: install system-deps
	$(BIN)/python jobs/demo.py --output out/demo

test: install system-deps
	$(BIN)/python -m pytest -q

clean:
	rm -rf out .pytest_cache
