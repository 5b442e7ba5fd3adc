# Two commands do all the set-up themselves: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROTOS := $(shell find proto -name '*.proto')

.PHONY: run test lint typecheck proto-check unit bench clean

$(STAMP): pyproject.toml hatch_build.py $(PROTOS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/oa run

test: $(STAMP) lint typecheck proto-check
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

proto-check: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH bash scripts/buf-check.sh

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

bench: $(STAMP)
	$(BIN)/oa bench append

clean:
	rm -rf $(VENV) src/oa/_proto
