# SimBridge: the two commands a newcomer runs are `make demo` and `make test`.
# Both set up everything they need first (idempotent: a second run skips what is done).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel on machines without a GPU; GPU users: make setup TORCH_SPEC='torch' keeps yours.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all
STAMP  := $(VENV)/.simbridge-installed

export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export PYTHONUNBUFFERED = 1

.PHONY: setup system-deps test lint demo bench clean help

help:
	@echo "make demo   - set up, then run the main job on the embedded default (simulated robot, tiny model)"
	@echo "make test   - set up, then run lint + the whole test suite"
	@echo "make setup  - only set up (system packages, .venv, simbridge[$(EXTRAS)])"
	@echo "make bench  - run the benchmarks in tests/benchmarks (results in tests/benchmarks/results/)"

system-deps:
	@bash .ci/system-deps.sh

$(STAMP): pyproject.toml setup.py
	@bash .ci/system-deps.sh
	@test -x $(BIN)/python || (echo "[setup] creating $(VENV)" && $(PYTHON) -m venv $(VENV))
	@echo "[setup] installing $(TORCH_SPEC) first (so the rest never pulls another torch build)"
	@$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	@$(BIN)/python -m pip install -q --progress-bar on "$(TORCH_SPEC)"
	@echo "[setup] installing simbridge[$(EXTRAS)] (a few minutes the first time)"
	@$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)
	@echo "[setup] done"

setup: $(STAMP)

lint: setup
	@$(BIN)/ruff check .

test: setup
	@echo "[test] ruff"
	@$(BIN)/ruff check .
	@echo "[test] pytest (all markers: slow and integration tests run too)"
	@$(BIN)/python -m pytest

demo: setup
	@$(BIN)/simbridge demo

bench: setup
	@for b in tests/benchmarks/bench_*.py; do echo "[bench] $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
