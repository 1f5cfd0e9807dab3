# Two commands on a fresh machine (see README):
#   make demo   the whole pipeline on synthetic footage, ending with a report page (out/demo/report/index.html)
#   make test   run the test suite
# Both create the virtual environment on first use and install the system packages the
# project needs (system-deps: chromium, which the tests use to render the report).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
export RAY_AUTH_MODE ?= disabled

.PHONY: demo test install system-deps bench-deps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# Debian packages the tests use, installed once, as root: chromium (headless) renders the report in
# tests/test_main_job.py; ffmpeg publishes the live tests' HLS streams and writes rolling segments, and the
# watcher remuxes RTSP with it; GStreamer's RTSP server (run by the system python3) serves their RTSP stream.
SYSTEM_PACKAGES := chromium fonts-dejavu-core ffmpeg gir1.2-gst-rtsp-server-1.0 python3-gi \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "system-deps: installing" $$missing "(apt-get)"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$$missing >/dev/null; \
	fi

# The benchmarks' second decode anchor and B-frame re-encoding (bench/ingest.py): Debian's ffmpeg CLI,
# which system-deps installs.
bench-deps: install system-deps

demo: install system-deps
	$(BIN)/python jobs/demo.py --output out/demo

test: install system-deps
	$(BIN)/python -m pytest -q --durations=25

clean:
	rm -rf out .pytest_cache
