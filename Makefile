# The two commands a newcomer needs: `make up` runs the platform, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test install status bench bench-quick bench-predictions clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/cdp up

status: $(STAMP)
	$(BIN)/cdp status

test: $(STAMP)
	$(BIN)/pytest -q

# Benchmarks are never part of `make test`: figures against targets, ceilings in the same run.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.predictions

bench-predictions: $(STAMP)
	$(BIN)/python -m bench.predictions $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .cdp
