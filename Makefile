# ucdir: `make reproduce` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DATA ?= digits
PARAMS ?=
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))

.PHONY: install reproduce reports-pacs lab test test-unit smoke notebooks figures bench-pacs bench-pacs-extra bench-scale bench-reproduce clean clean-cache

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[dev,notebooks]"
	touch $@

## Run every notebook in order with papermill (DATA=digits or a dataset root such as ../shared/data/pacs), on one
## thread: the README's digits numbers are bit-identical then (more threads reorder float sums).
reproduce: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m ucdir_core.companion.notebooks run --data $(DATA) $(if $(PARAMS),--parameters $(PARAMS),)

## The executed PACS reproduction, committed in reports/pacs/ (figures in figures/pacs/): the six notebooks on
## PACS with notebooks/params/pacs.yaml, from results/pacs.json and the benchmark's run folders in runs/pacs
## (read back, not retrained, when `make bench-pacs` made them).
reports-pacs: install
	$(BIN)/python -m ucdir_core.companion.notebooks run --data ../shared/data/pacs --parameters notebooks/params/pacs.yaml

## JupyterLab on the notebooks, with this project's environment as the kernel (extra options: LAB_ARGS="--port 8890").
lab: install
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
		$$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

## The full test suite, then every notebook in smoke mode (digits, and PACS when ../shared/data/pacs exists).
test: install test-unit smoke

test-unit: install
	$(BIN)/python -m pytest -q

smoke: install
	$(BIN)/python -m ucdir_core.companion.notebooks run --data digits --smoke
	@if [ -d ../shared/data/pacs ]; then $(BIN)/python -m ucdir_core.companion.notebooks run --data ../shared/data/pacs --smoke; fi

## Regenerate notebooks/*.ipynb from their jupytext sources notebooks/src/*.py.
notebooks: install
	$(BIN)/python -m ucdir_core.companion.notebooks build

## The PACS benchmark's grid (every row, both splits, seed 0; 101 min from scratch on 2 cores), then its
## two other parts into the same file: the second seed and the paper's end-to-end code path.
BENCH_PACS := $(BIN)/python -m benchmarks.pacs --root ../shared/data/pacs --out results/pacs.json

bench-pacs: install
	$(BENCH_PACS)

bench-pacs-extra: install
	$(BENCH_PACS) --rows instance full protoot --seeds 0 1
	$(BENCH_PACS) --end-to-end-only

## How long `make install` and `make reproduce` take from a fresh clone on this machine (about 10 minutes).
bench-reproduce: install
	$(BIN)/python -m benchmarks.reproduce

bench-scale: install
	$(BIN)/python -m benchmarks.retrieval --map-limit 50000
	$(BIN)/python -m benchmarks.kmeans
	$(BIN)/python -m benchmarks.throughput --steps 15

## Removes run folders and executed notebooks, except the committed PACS reproduction (reports/pacs).
clean:
	rm -rf runs .pytest_cache
	if [ -d reports ]; then find reports -mindepth 1 -maxdepth 1 ! -name pacs -exec rm -rf {} +; fi

## Removes the data home ($UCDIR_DATA, default ~/.cache/ucdir): built digits, downloaded benchmarks, the view cache.
clean-cache:
	rm -rf "$${UCDIR_DATA:-$$HOME/.cache/ucdir}"
