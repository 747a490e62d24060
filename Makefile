# mtl_keras: the two commands of the README, and a few more.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0
# integration tests of the JAX pass: the mtl-keras command on JAX with TensorFlow blocked
JAX_INTEGRATION := tests/integration/test_cli_without_tensorflow.py

.PHONY: demo test test-jax test-slow docs lint format clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make demo: pretrain + meta-train + evaluate on the embedded glyph dataset
demo: $(STAMP)
	$(VENV)/bin/mtl-keras demo

## make test: lint, the whole test suite on TensorFlow (slow tests excluded), then the
## backend-agnostic tests (marked `backends`) again on JAX, with the command on JAX without TensorFlow
test: $(STAMP)
	$(VENV)/bin/ruff check mtl_keras mtl_keras_app tests scripts benchmarks
	$(VENV)/bin/python -m pytest -q --durations=15
	KERAS_BACKEND=jax $(VENV)/bin/python -m pytest -q --durations=10 -m "backends and not slow" tests/unit $(JAX_INTEGRATION)

## make test-jax: only the JAX pass of make test
test-jax: $(STAMP)
	KERAS_BACKEND=jax $(VENV)/bin/python -m pytest -q --durations=10 -m "backends and not slow" tests/unit $(JAX_INTEGRATION)

## make test-slow: only the tests marked slow
test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow

## make docs: the guides and the API reference (from the docstrings) into site/, warnings as errors
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check mtl_keras mtl_keras_app tests scripts benchmarks
	$(VENV)/bin/ruff format --check mtl_keras mtl_keras_app tests scripts benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format mtl_keras mtl_keras_app tests scripts benchmarks
	$(VENV)/bin/ruff check --fix mtl_keras mtl_keras_app tests scripts benchmarks

clean:
	rm -rf $(VENV) build *.egg-info runs site
