# The two commands a new machine needs: `make demo` and `make test`.
# Each creates the venv and installs what it needs; Kafka jars come from Maven Central
# on first use and are cached under .inferwatch/kafka/libs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install ui-assets system-deps test unit integration lint demo bench kafka-up kafka-down clean

# Debian packages the integration tests drive (the real Prometheus and Alertmanager,
# kcat as a Kafka client that is not ours, and Chromium for the dashboard's browser tests).
SYSTEM_PACKAGES := prometheus prometheus-alertmanager kcat chromium fonts-liberation
SYSTEM_COMMANDS := prometheus promtool prometheus-alertmanager kcat chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[worker,test,bench]'
	touch $@

install: $(STAMP) ui-assets

# The dashboard's charting library (uPlot, pinned in pipeline/ui/package-lock.json) from
# npm, copied into the package so nothing is fetched from a CDN at run time.
UI_VENDOR := pipeline/ui/static/vendor
ui-assets: $(UI_VENDOR)/uPlot.iife.min.js $(UI_VENDOR)/uPlot.min.css

$(UI_VENDOR)/uPlot.iife.min.js $(UI_VENDOR)/uPlot.min.css &: pipeline/ui/package-lock.json
	npm ci --prefix pipeline/ui --no-audit --no-fund --loglevel=error
	mkdir -p $(UI_VENDOR)
	cp pipeline/ui/node_modules/uplot/dist/uPlot.iife.min.js pipeline/ui/node_modules/uplot/dist/uPlot.min.css $(UI_VENDOR)/

# Installed with apt when run as root (CI); otherwise the tests that need them say so.
system-deps:
	@missing=""; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(SYSTEM_PACKAGES) (missing:$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "make: not root, so not installing $(SYSTEM_PACKAGES) (missing:$$missing)" >&2; fi; \
	fi

# The whole suite: lint, unit tests, doctests, and integration tests on a real broker
# (INFERWATCH_KAFKA, else testcontainers where Docker answers, else our own KRaft broker,
# started and stopped by the test session). pytest's "no tests ran" (exit 5) fails.
test: install system-deps
	$(BIN)/ruff check .
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests - failing" >&2; exit 1; fi; \
	exit $$rc

unit: install
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

integration: install system-deps
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

demo: install
	bash deploy/local/demo.sh

bench: install
	$(BIN)/python benchmarks/ingest.py

# Drift, change-point and anomaly evaluation (issue 4): seeded streams, no broker, ~90 s CPU.
.PHONY: bench-drift
bench-drift: install
	$(BIN)/python benchmarks/drift_eval.py $(BENCH_ARGS)

kafka-up: install
	$(BIN)/inferwatch dev up

kafka-down: install
	$(BIN)/inferwatch dev down

clean:
	-$(BIN)/inferwatch dev down
	rm -rf $(VENV) .inferwatch .pytest_cache .ruff_cache *.egg-info
