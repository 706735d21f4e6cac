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

.PHONY: help venv lock system-deps infra kafka catalogs k8s s3 tools images cluster cluster-down test test-unit test-cluster demo bench lint typecheck clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# The pinned dependencies are requirements/*.txt (versions and hashes, no index URL: uv's default index or the
# environment's chooses where they come from). `make lock` re-resolves them after a change of pyproject.toml,
# keeping every pin it can.
LOCK := $(UV) pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --no-emit-index-url \
	--no-header -q

$(VENV)/.synced: $(UV) pyproject.toml requirements/all.txt
	$(UV) venv --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --python $(PY) requirements/all.txt
	$(UV) pip install --python $(PY) --no-deps -e .
	touch $@

venv: $(VENV)/.synced  ## create .venv with the pinned dependencies (editable install, test + dev extras)

lock: $(UV)  ## re-resolve requirements/all.txt (every extra) and requirements/runtime.txt (the image) from pyproject.toml
	$(LOCK) --all-extras -o requirements/all.txt
	$(LOCK) -c requirements/all.txt -o requirements/runtime.txt

system-deps:  ## Debian packages the tests need (chromium, containerd, runc, CNI, buildah, mmdebstrap); root, idempotent
	bash scripts/system-deps.sh

kafka: venv  ## fetch the Kafka broker jars from Maven Central into the cache
	$(PY) -m tests.infra.kafka fetch

catalogs: venv  ## fetch and compile Apache Iceberg's REST catalog test server (Maven Central) into the cache
	$(PY) -m tests.infra.iceberg_rest fetch

k8s:  ## build etcd, the control plane, kubelet, kube-proxy, kubectl, helm from the Go module proxy (cached)
	bash scripts/k8s-binaries.sh

tools:  ## build CoreDNS, the local-path provisioner, skaffold, Helm 4, Prometheus and promtool from the Go module proxy (cached)
	bash scripts/go-tools.sh coredns local-path skaffold helm4 prometheus

images: system-deps k8s kafka  ## build the cluster's images with buildah (Debian base, pause, Kafka, the project's)
	bash scripts/cluster-images.sh build base
	bash scripts/cluster-images.sh build pause
	bash scripts/cluster-images.sh build kafka
	bash scripts/cluster-images.sh build project

cluster: venv infra  ## a real single-node Kubernetes here (stand-in for kind): kubeconfig in output/cluster/kubeconfig
	$(PY) -m tests.infra.cluster up --workdir output/cluster

cluster-down:  ## stop the cluster of `make cluster` and restore the machine
	$(PY) -m tests.infra.cluster down

s3:  ## build the S3-compatible test server (SeaweedFS) from the Go module proxy (cached)
	bash scripts/s3-server.sh

infra: system-deps kafka catalogs k8s s3 tools  ## everything the tests need (cached under ~/.cache/zeek-pipeline)

# The Kubernetes binaries, Go tools and images build in the background (scripts/prebuild.sh) while the unit
# and integration tests run; the e2e and cluster tiers come last (pyproject's testpaths) and wait for them.
test: venv system-deps kafka catalogs s3  ## every test: unit, integration, browser, e2e, cluster tier (own Kafka, S3, Kubernetes)
	@mkdir -p $(CACHE); bash scripts/prebuild.sh > $(CACHE)/prebuild.log 2>&1 & prebuild=$$!; \
	  $(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	  wait $$prebuild || echo "prebuild: see $(CACHE)/prebuild.log"; exit $$status

test-cluster: venv infra  ## only the cluster tier (a real single-node Kubernetes with the project's image)
	$(PY) -m pytest tests/cluster $(PYTEST_ARGS)

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
