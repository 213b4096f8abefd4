# Two commands do all set-up on a fresh machine:
#   make run    -- create .venv if needed, then replay the benchmark protocol (lensllm bench)
#   make test   -- create .venv if needed, then lint and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU wheel available offline, in the same pip command as its
# dependents; anything else pulls a multi-gigabyte CUDA build.
EXTRAS ?= finetune,datasets,ray,nlpmetrics,dev

.PHONY: run test test-all venv bench-speed clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]" "torch==2.13.0"
	touch $@

venv: $(VENV)/.installed

run: venv
	$(BIN)/lensllm bench

test: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

test-all: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

bench-speed: venv
	$(BIN)/python benchmarks/bench_speed.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache .hypothesis
