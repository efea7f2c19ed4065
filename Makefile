# llmops — the two commands a newcomer needs: `make up` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
MODEL_DIR := models/all-MiniLM-L6-v2
# The tiny random-weight causal LM that Triton's causal_lm serves by default (LLMOPS_LLM_PATH).
TINY_LLM_DIR := models/tiny-llm
# The guardrails' injection and toxicity heads over the multilingual encoder, trained from the
# public sets under tests/data/guardrails (fixed seed, deterministic).
GUARD_DIR := models/guardrails
GUARD_DATA := $(wildcard tests/data/guardrails/injection/* tests/data/guardrails/toxicity/*)
# Every Triton python model runs in its own venv (numpy<2), in its folder: python_env/,
# with the requirements of its requirements.txt (none: numpy==1.26.4 only).
TRITON_MODEL_ENVS := $(patsubst %/config.pbtxt,%/python_env/.installed,$(wildcard deploy/triton/models/*/config.pbtxt))
# The Node.js example client of the gateway (tests/e2e/test_node_client.py), from its lock file.
NODE_CLIENT := tests/node_client

.PHONY: setup up down test lint proto bench clean tesseract

# Two jobs: checkov's venv, the Node client and Tesseract install while .venv does (a fresh
# setup ~1 minute sooner). Output is not synced: make would hold a command's output until
# it ends, and pytest's progress would show only when the suite is over.
MAKEFLAGS += --jobs=2

## setup: venv, dependencies (torch CPU first), generated code, model files, Triton and its models' venvs, the Node client's packages, Tesseract for scanned PDFs, checkov (its own venv) for the manifests
setup: $(STAMP) proto $(MODEL_DIR)/llmops_model.json $(TINY_LLM_DIR)/tiny_llm.json $(GUARD_DIR)/classifiers.json .cache/triton/.installed $(TRITON_MODEL_ENVS) $(NODE_CLIENT)/node_modules/.installed tesseract .cache/checkov/.installed-3.3.30

# Scanned PDF pages are OCR'd by Debian's tesseract-ocr (~16 s, 24 MB): installed when missing
# and apt-get can (as root, or with passwordless sudo); otherwise say how, and go on without.
tesseract:
	@command -v tesseract >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q --no-install-recommends tesseract-ocr >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends tesseract-ocr >/dev/null; } || \
		echo "make setup: could not install tesseract-ocr (apt-get failed): scanned PDFs will not be OCR'd" >&2; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then \
		sudo apt-get install -y -q --no-install-recommends tesseract-ocr >/dev/null || \
		echo "make setup: could not install tesseract-ocr (apt-get failed): scanned PDFs will not be OCR'd" >&2; \
	else \
		echo "make setup: install tesseract-ocr to OCR scanned PDFs (apt-get install tesseract-ocr)" >&2; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The pinned CPU build first: anything looser pulls a ~5 GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install --progress-bar on -e ".[all]" --config-settings editable_mode=compat
	# libs/ and services/ are import roots (packages `llmops`, `ingestion`, ...).
	$(BIN)/python -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "llmops-src.pth").write_text("$(CURDIR)/libs\n$(CURDIR)/services\n")'
	touch $@

proto: $(STAMP)
	$(BIN)/python proto/generate.py

$(MODEL_DIR)/llmops_model.json: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m embedding.export_model --out $(MODEL_DIR)

$(TINY_LLM_DIR)/tiny_llm.json: $(STAMP) services/inference/build_tiny_llm.py
	HF_HUB_OFFLINE=1 $(BIN)/python -m inference.build_tiny_llm --out $(TINY_LLM_DIR) --force

$(GUARD_DIR)/classifiers.json: $(STAMP) $(GUARD_DATA) services/guardrails/train_classifiers.py services/guardrails/classifier.py services/guardrails/multilingual.py
	HF_HUB_OFFLINE=1 $(BIN)/python -m guardrails.train_classifiers --out $(GUARD_DIR)

.cache/triton/.installed: $(STAMP)
	$(BIN)/python -c 'from pathlib import Path; from llmops.triton import install_runtime; install_runtime(Path(".cache/triton"))'

# checkov, the Kubernetes policy linter of tests/deploy, pins many packages of its own: its own
# venv, never .venv (pip only; nothing it pulls is torch). The stamp names the pin, so a new
# pin reinstalls; tests/deploy/test_policy.py checks that the venv holds this version.
.cache/checkov/.installed-3.3.30:
	test -x .cache/checkov/bin/python || $(PY) -m venv .cache/checkov
	.cache/checkov/bin/pip install -q checkov==3.3.30
	touch $@

# install_model_env rebuilds only if the requirements changed; touch keeps make from asking again.
.SECONDEXPANSION:
deploy/triton/models/%/python_env/.installed: $(STAMP) libs/llmops/triton/model_env.py $$(wildcard deploy/triton/models/%/requirements.txt)
	$(BIN)/python -c 'from pathlib import Path; from llmops.triton import install_model_env; install_model_env(Path("$(@D)"))'
	touch $@

# npm ci installs exactly the lock file (and fails if package.json disagrees with it); it reruns
# only when either changes, so setup stays offline once done. No install scripts are needed.
$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package-lock.json $(NODE_CLIENT)/package.json
	@command -v npm >/dev/null || { echo "make setup: npm (Node.js >= 18) is needed for $(NODE_CLIENT)" >&2; exit 1; }
	cd $(NODE_CLIENT) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

## up: set up, then run the whole platform in the foreground (Ctrl-C stops it)
up: setup
	$(BIN)/llmops up

down:
	$(BIN)/llmops down

## test: the whole suite (lint, types, contracts, unit, end-to-end) — what CI runs
test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check libs services tests bench deploy/triton
	$(BIN)/mypy libs services
	$(BIN)/lint-imports

bench: setup
	$(BIN)/pip install -q -e ".[bench]" --config-settings editable_mode=compat
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/chat.py
	$(BIN)/python bench/analytics.py
	$(BIN)/python bench/guardrails.py
	$(BIN)/python bench/scaleout.py

clean:
	rm -rf $(VENV) .cache models deploy/triton/models/*/python_env .llmops .pytest_cache .mypy_cache .ruff_cache libs/llmops/v1 $(NODE_CLIENT)/node_modules
