# opd-diag: every target does its own set-up on a fresh machine.
#   make demo   -> set up .venv, run the demo on the built-in model zoo
#   make test   -> set up .venv, lint, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU wheel used when no torch is installed and no NVIDIA GPU is visible.
TORCH_CPU_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test lint bench clean reports notebooks

$(VENV)/.setup-done: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# Leave a user's existing torch alone; prefer the CPU build where there is no GPU.
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "[setup] keeping existing torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "[setup] NVIDIA GPU found: installing the default (CUDA) torch build"; \
	  $(PIP) install -q "torch>=2.4"; \
	else \
	  echo "[setup] no GPU: installing CPU torch $(TORCH_CPU_VERSION)"; \
	  $(PIP) install -q --retries 0 --timeout 15 "torch==$(TORCH_CPU_VERSION)" \
	    --index-url $(TORCH_CPU_INDEX) \
	    || $(PIP) install -q "torch==$(TORCH_CPU_VERSION)"; \
	fi
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $@

setup: $(VENV)/.setup-done

demo: setup
	$(VENV)/bin/opd-diag demo --out runs/demo

lint: setup
	$(VENV)/bin/ruff check opd_diag tests benchmarks scripts

test: setup lint
	$(PY) -m pytest tests

bench: setup
	$(PY) benchmarks/capture.py

reports: setup
	$(PY) -m opd_diag.cli.examples --runs runs/examples --out reports

notebooks: setup
	@test -d runs/demo/preflight-success || $(VENV)/bin/opd-diag demo --out runs/demo
	$(PY) scripts/execute_notebooks.py

clean:
	rm -rf $(VENV) runs/demo .pytest_cache
