# zeek-pipeline: one Makefile for people and CI. `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
CACHE ?= $(HOME)/.cache/zeek-pipeline
UV_VERSION := 0.13.9
UV_HOME := $(CACHE)/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

export UV_PYTHON_DOWNLOADS := never
export UV_CACHE_DIR := $(CACHE)/uv-cache
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help venv system-deps infra kafka k8s s3 test test-unit demo bench lint typecheck clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --all-extras --python $(PYTHON)
	touch $@

venv: $(VENV)/.synced  ## create .venv with the locked dependencies (editable install, test + dev extras)

system-deps:  ## Debian packages the browser tests need (chromium, chromium-driver); root only, idempotent
	bash scripts/system-deps.sh

kafka: venv  ## fetch the Kafka broker jars from Maven Central into the cache
	$(PY) -m tests.infra.kafka fetch

k8s:  ## build kube-apiserver, kube-controller-manager, kubectl, etcd, helm from the Go module proxy (cached)
	bash scripts/k8s-binaries.sh

s3:  ## build the S3-compatible test server (SeaweedFS) from the Go module proxy (cached)
	bash scripts/s3-server.sh

infra: kafka k8s s3 system-deps  ## everything the integration tests need

test: venv infra  ## unit + integration + e2e tests (starts its own Kafka, S3 and Kubernetes API server)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv  ## the fast tests only (no broker)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

demo: venv kafka  ## run the whole pipeline locally on real Zeek logs; output lands in ./output
	$(PY) scripts/demo.py

bench: venv kafka  ## benchmarks (transform, relay vs normalizer, consume vs writer); writes bench/results/
	$(PY) bench/run_all.py

lint: venv  ## ruff
	$(VENV)/bin/ruff check services operator tests bench scripts

typecheck: venv  ## mypy --strict on the package and the operator
	$(VENV)/bin/mypy

clean:  ## remove the venv and local output (the download cache under ~/.cache/zeek-pipeline stays)
	rm -rf $(VENV) output log
