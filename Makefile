# n2s_eds: everything installs itself into .venv
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: demo test venv install install-dev lint bench external-venvs clean

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

# the current set of benchmarks/results/: the table and figures, the hallucination checks, speed.
# The BM3D/BM4D rows take hours: when benchmarks/cache/ does not hold them, keep the committed
# ones with BENCH_ARGS="--carry bm3d,bm4d --carry-from benchmarks/results/bench.csv"
BENCH_METHODS ?= raw,gaussian1,gaussian2,pca,pca_gaussian,guided_filter,bm3d,bm4d,espm,fused,n2s,n2s_guided
BENCH_ARGS ?=
bench: $(VENV)/.installed-dev external-venvs
	$(BIN)/python benchmarks/run_bench.py --methods $(BENCH_METHODS) --output benchmarks/results --cache-dir benchmarks/cache $(BENCH_ARGS)
	$(BIN)/python benchmarks/run_bench.py --hallucination --output benchmarks/results --cache-dir benchmarks/cache
	$(BIN)/python benchmarks/speed.py --skip-bm3d --steps 100 --output benchmarks/results

# the external baselines of the benchmark (benchmarks/README.md): espm in its own environment
# (it pins its own HyperSpy/exspy and pulls PyQt5), pinned by benchmarks/external/requirements-espm.txt;
# multimodal-fusion (the bench extra) in .venv
ESPM_VENV := benchmarks/external/.venv-espm
$(ESPM_VENV)/.installed: benchmarks/external/requirements-espm.txt
	$(PYTHON) -m venv $(ESPM_VENV)
	$(ESPM_VENV)/bin/python -m pip install -r benchmarks/external/requirements-espm.txt
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev pyproject.toml
	$(BIN)/python -m pip install -e ".[bench]" "$(TORCH)"
	touch $@

# the ResNet-34 UNet of the imaging benchmark: segmentation-models-pytorch with the torch and
# torchvision pair it needs (benchmarks/external/requirements-smp.txt), n2s_eds installed in it
SMP_VENV := benchmarks/external/.venv-smp
$(SMP_VENV)/.installed: benchmarks/external/requirements-smp.txt pyproject.toml
	$(PYTHON) -m venv $(SMP_VENV)
	$(SMP_VENV)/bin/python -m pip install -r benchmarks/external/requirements-smp.txt
	$(SMP_VENV)/bin/python -m pip install -e . -r benchmarks/external/requirements-smp.txt
	touch $@

external-venvs: $(ESPM_VENV)/.installed $(VENV)/.installed-bench $(SMP_VENV)/.installed

clean:
	rm -rf $(VENV) demo_output .pytest_cache
