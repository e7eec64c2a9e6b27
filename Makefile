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

bench: $(VENV)/.installed-dev
	$(BIN)/n2s-eds bench

clean:
	rm -rf $(VENV) demo_output .pytest_cache
