# ucdir: `make reproduce` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DATA ?= digits
PARAMS ?=
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))

.PHONY: install reproduce test test-unit smoke notebooks figures bench-pacs bench-scale clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[dev,notebooks]"
	touch $@

## Run every notebook in order with papermill (DATA=digits or a dataset root such as ../shared/data/pacs).
reproduce: install
	$(BIN)/python -m ucdir_core.notebooks run --data $(DATA) $(if $(PARAMS),--parameters $(PARAMS),)

## The full test suite, then every notebook in smoke mode (digits, and PACS when ../shared/data/pacs exists).
test: install test-unit smoke

test-unit: install
	$(BIN)/python -m pytest -q

smoke: install
	$(BIN)/python -m ucdir_core.notebooks run --data digits --smoke
	@if [ -d ../shared/data/pacs ]; then $(BIN)/python -m ucdir_core.notebooks run --data ../shared/data/pacs --smoke; fi

## Regenerate notebooks/*.ipynb from their jupytext sources notebooks/src/*.py.
notebooks: install
	$(BIN)/python -m ucdir_core.notebooks build

bench-pacs: install
	$(BIN)/python -m benchmarks.pacs --root ../shared/data/pacs --out results/pacs.json

bench-scale: install
	$(BIN)/python -m benchmarks.retrieval --map-limit 50000
	$(BIN)/python -m benchmarks.kmeans
	$(BIN)/python -m benchmarks.throughput --steps 15

clean:
	rm -rf reports runs .pytest_cache
