# Set-up and entry points. A fresh machine needs only python3 (3.11), pip and gcc:
#   make demo   - install, then materialize the whole graph into the local instance
#   make test   - install, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Targets and recipes use paths relative to this folder, and absolute ones only through quoted
# environment variables, so a checkout whose path has spaces works and nothing is written outside.
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export DS_DATA_DIR ?= $(CURDIR)/data
INSTANCE_YAML := .dagster_home/dagster.yaml

# onnxruntime and onnxruntime-gpu cannot live together: take the GPU extra only with a GPU.
EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: install demo dataset test lint dev bench bench-quick skab eval ui-test clean

# A failed creation removes the half-made venv, so the next run starts over instead of finding
# a python without pip.
$(PY):
	$(PYTHON) -m venv $(VENV) && $(VENV)/bin/python -m pip install --quiet --upgrade pip \
	  || { rm -rf $(VENV); echo "could not create $(VENV) with $(PYTHON) (needs venv and pip)"; exit 1; }

# Re-installs only when pyproject.toml changes, so a second `make demo` skips set-up.
$(STAMP): pyproject.toml | $(PY)
	rm -f $(VENV)/.installed-*
	$(PY) -m pip install --quiet -e ".[pipeline,$(EXTRA),dev]"
	touch $@

install: $(STAMP)

$(INSTANCE_YAML): dagster.yaml
	mkdir -p .dagster_home
	cp dagster.yaml $@

demo: install $(INSTANCE_YAML)
	$(PY) -m ds_assets.demo

# A declared dataset end to end (ds_assets/defs/$(NAME)/defs.yaml; `ds-dataset scaffold` writes
# one from a file): ingest, checks, training, champion, scoring and alerts into the local instance
dataset: install $(INSTANCE_YAML)
	@[ -n "$(NAME)" ] || { echo "usage: make dataset NAME=<declared dataset>"; exit 2; }
	$(VENV)/bin/ds-dataset materialize "$(NAME)"

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check ds_assets ds_serving tests bench
	$(VENV)/bin/mypy ds_assets ds_serving

# Benchmarks report ratios against a baseline measured in the same run (shared, noisy machines).
# The single-row phases need h2load (Debian's nghttp2-client): installed here when it is missing
# and apt-get can run (root); otherwise the benchmark skips those phases and says so.
bench: install
	@command -v h2load >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -qq nghttp2-client >/dev/null 2>&1 \
	       || { apt-get update -qq && apt-get install -y -qq nghttp2-client; } >/dev/null 2>&1; } \
	  || echo "h2load not installed (apt-get install nghttp2-client); its phases are skipped"; }
	$(PY) -m bench.generator
	$(PY) -m bench.ingest
	$(PY) -m bench.scorer
	$(PY) -m bench.contention
	$(PY) -m bench.dataset_scoring
	$(PY) -m bench.policies
	$(PY) -m bench.pyod_peer
	$(PY) -m bench.mlserver_peer

# Under a minute, for day-to-day use: short phases and small sizes, results under
# bench/results/quick/ (not kept in git; `make bench` writes the dated records).
QUICK := bench/results/quick
bench-quick: install
	@mkdir -p $(QUICK)
	$(PY) -m bench.scorer --seconds 1 --out $(QUICK)/scorer.json
	$(PY) -m bench.dataset_scoring --sizes 300000 1000000 --repeats 1 \
	  --out $(QUICK)/dataset-scoring.json
	$(PY) -m bench.ingest --rows 200000 --out $(QUICK)/ingest.json

# SKAB outlier-detection protocol on the real benchmark data (not in the repo: GPL-3.0).
export SKAB_DIR ?= $(CURDIR)/../shared/datasets/skab
skab: install
	$(PY) -m bench.skab --skab-dir "$$SKAB_DIR"

# Leave-one-dataset-out evaluation (SKAB, GutenTAG, our generator): every default chosen on two
# sources and reported on the third; scores cached under $DS_DATA_DIR/eval/scores.
export GUTENTAG_DIR ?= $(CURDIR)/../shared/datasets/gutentag
eval: install
	$(PY) -m bench.cross_dataset --skab-dir "$$SKAB_DIR" --gutentag-dir "$$GUTENTAG_DIR"

# The Dagster UI in headless Chromium (tests/ui): Debian's chromium, installed here when it is
# missing and apt-get can run (root), and Playwright from the `ui` extra (no browser download).
UI_STAMP := $(VENV)/.installed-ui-$(EXTRA)
$(UI_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[pipeline,$(EXTRA),dev,ui]"
	touch $@

ui-test: $(UI_STAMP)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	       || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } \
	       >/dev/null 2>&1; } \
	  || { echo "chromium is missing: apt-get install chromium (as root)"; exit 1; }; }
	DS_UI_TEST=1 $(PY) -m pytest -m ui tests/ui -v -s

dev: install $(INSTANCE_YAML)
	$(VENV)/bin/dagster dev -w workspace.yaml

clean:
	rm -rf -- "$$DAGSTER_HOME" "$$DS_DATA_DIR"
