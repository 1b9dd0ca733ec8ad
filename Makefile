# The two commands a newcomer needs: `make up` runs the platform, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test install status bench bench-quick bench-predictions bench-dashboard clean

DASHBOARD := queries/dashboard
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Python packages into the venv; the dashboard's front-end packages (Preact, htm, uPlot) from the npm registry.
$(STAMP): pyproject.toml $(DASHBOARD)/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	npm ci --prefix $(DASHBOARD) --no-audit --no-fund --loglevel=error
	touch $(STAMP)

# The dashboard's browser tests drive Debian's Chromium (Playwright never downloads a browser of its own).
$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/cdp up

status: $(STAMP)
	$(BIN)/cdp status

test: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest -q

# Benchmarks are never part of `make test`: figures against targets, ceilings in the same run.
bench: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.predictions
	$(BIN)/python -m bench.dashboard

bench-dashboard: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m bench.dashboard $(BENCH_ARGS)

bench-predictions: $(STAMP)
	$(BIN)/python -m bench.predictions $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .cdp
