# Two commands do all set-up on a fresh machine (Python 3.11+ and Java 17+ present):
#   make demo   - venv + install + the pipeline on the generated sample crawl
#   make test   - venv + install + the default test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export SPARK_LOCAL_IP ?= 127.0.0.1
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: setup demo test test-all bench-extract bench-dedup bench-download bench-lake clean

$(STAMP): pyproject.toml
	@PYTHON=$(PYTHON) deploy/check_env.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

setup: $(STAMP)

demo: setup
	deploy/demo.sh

test: setup
	$(PY) -m pytest -m "not slow" -q

test-all: setup
	$(PY) -m pytest -q

bench-extract: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/extract/run.py --spark --json bench/extract/last.json

bench-dedup: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/dedup/run.py --json bench/dedup/last.json

bench-download: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/download/run.py --json bench/download/last.json

bench-lake: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/lake/commit.py --json bench/lake/last.json

clean:
	rm -rf demo-lake build .pytest_cache
