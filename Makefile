# n2s_eds: everything installs itself into .venv
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: demo test venv install install-dev lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel

# torch first, pinned, so that nothing else pulls a CUDA build
$(VENV)/.torch: $(BIN)/python
	$(BIN)/python -m pip install "$(TORCH)"
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(BIN)/python -m pip install -e . "$(TORCH)"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install -e ".[dev,notebooks,bm3d]" "$(TORCH)"
	touch $@

venv install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/n2s-eds demo --output demo_output

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -ra

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# the benchmark table and figures, then the hallucination checks, into benchmarks/results/;
# e.g. BENCH_ARGS="--carry bm3d,bm4d --carry-from benchmarks/results/bench.csv" keeps the
# BM3D/BM4D rows of the committed table when benchmarks/cache/ does not hold them (hours)
BENCH_ARGS ?=
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_bench.py --output benchmarks/results --cache-dir benchmarks/cache $(BENCH_ARGS)
	$(BIN)/python benchmarks/run_bench.py --hallucination --output benchmarks/results --cache-dir benchmarks/cache

clean:
	rm -rf $(VENV) demo_output .pytest_cache
