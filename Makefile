# kfloop developer commands. `make run` and `make test` set everything up on first use.
SHELL := /bin/bash
# bytecode caches as Python writes them by default, even where the environment turns them off: the suite and
# `make run` start hundreds of interpreters (pipeline steps, servers, CLI calls), each would compile kfloop anew
export PYTHONDONTWRITEBYTECODE :=
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# scanners kept out of .venv: checkov pins old boto3/packaging/networkx (tests/deploy/checks.py runs it from here)
TOOLS_VENV := .venv-tools
CONFIG ?= examples/fraud/kfloop.yaml
CLUSTER_CONFIG ?= examples/fraud/kfloop.cluster.yaml
# the Grafana dashboard the Helm chart ships (rendered from CLUSTER_CONFIG by `make compile`)
CHART := helm/kfloop
# the chart's values generated from CLUSTER_CONFIG (`kfloop chart values`; `make compile` writes them)
CHART_VALUES ?= examples/fraud/helm-values.yaml
GRAFANA_DASHBOARD ?= $(CHART)/dashboards/kfloop.json
DEMO_ROWS ?= 200000
DEMO_SOURCE ?= .kfloop/source/transactions.csv
# a few defects of each kind, so the demo shows the contract at work (quarantine, duplicates)
DEMO_DEFECTS ?= demo
# the demo data's end (90 days from 2026-01-01): serve-check answers as of it, a replay; on the wall clock the
# demo's rows are older than their feature views' ttls and every row would be scored on default features
DEMO_AS_OF ?= 2026-04-01T00:00:00+00:00
# the second example (examples/flights): departures' arrival delay (regression), local times in a zone,
# NA tokens, derived and late-known columns, attribute tables (airports, weather); `make run-flights`
FLIGHTS_CONFIG ?= examples/flights/kfloop.yaml
FLIGHTS_ROWS ?= 100000
FLIGHTS_SOURCE ?= .kfloop/source/flights/flights.csv
# the flights data's end (60 days from 2026-02-01: 2026-04-02 00:00 in Chicago): serve-check answers as of it
FLIGHTS_AS_OF ?= 2026-04-02T05:00:00+00:00

# System packages (Debian/Ubuntu; each package installs /usr/bin/<name>, the path the tests and benchmarks
# use: a binary of that name elsewhere on PATH, e.g. a snap's /snap/bin/chromium, does not count)
# (kubectl: `kubectl kustomize` checks manifests/ against the Helm chart)
TEST_PACKAGES := redis-server chromium prometheus prometheus-alertmanager prometheus-node-exporter kubectl
BENCH_PACKAGES := redis-server wrk

.DEFAULT_GOAL := help
.PHONY: help setup tools system-test system-bench run run-flights test test-fast lint format bench compile manifests check-compiled docs clean

# $(call ensure_packages,PKG...): install the missing ones with apt-get when root, else name the command and stop
define ensure_packages
	@missing=""; for p in $(1); do [ -x /usr/bin/$$p ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing system packages:$$missing; install them with: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; install it with: sudo apt-get install -y $(PYTHON) $(PYTHON)-venv"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -c "import ensurepip" 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq $(PYTHON)-venv >/dev/null; \
	  else echo "$(PYTHON) cannot create a venv; install it with: sudo apt-get install -y $(PYTHON)-venv"; exit 1; fi; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	# torch pinned to the CPU wheel (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev,tensorflow]"
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install kfloop with dev and TensorFlow extras

$(TOOLS_VENV)/.installed:
	@test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet "checkov==3.3.30"
	@touch $@

tools: $(TOOLS_VENV)/.installed ## Create .venv-tools with the scanners the deploy tests run (checkov)

system-test: ## Install the system packages the tests need (redis-server, chromium, prometheus, prometheus-alertmanager, prometheus-node-exporter) when missing
	$(call ensure_packages,$(TEST_PACKAGES))

system-bench: ## Install the system packages the benchmarks need (redis-server, wrk) when missing
	$(call ensure_packages,$(BENCH_PACKAGES))

run: $(STAMP) ## Run the whole loop on the demo (embedded defaults) and print a summary
	$(BIN)/kfloop demo-data --rows $(DEMO_ROWS) --out $(DEMO_SOURCE) --defects $(DEMO_DEFECTS) --skip-existing
	$(BIN)/kfloop run --config $(CONFIG)
	KFLOOP_SERVING_AS_OF=$(DEMO_AS_OF) $(BIN)/kfloop serve-check --config $(CONFIG)
	$(BIN)/kfloop lineage --config $(CONFIG)
	$(BIN)/kfloop audit verify --config $(CONFIG)
	$(BIN)/kfloop loop --config $(CONFIG) --rows $(DEMO_ROWS) --defects $(DEMO_DEFECTS)

run-flights: $(STAMP) ## Run the whole loop on the flights example (regression, time zone, attribute tables)
	$(BIN)/kfloop demo-data --example flights --rows $(FLIGHTS_ROWS) --out $(FLIGHTS_SOURCE) --skip-existing
	$(BIN)/kfloop run --config $(FLIGHTS_CONFIG)
	KFLOOP_SERVING_AS_OF=$(FLIGHTS_AS_OF) $(BIN)/kfloop serve-check --config $(FLIGHTS_CONFIG)

# three workers on two cores (many tests wait on servers and subprocesses), each test file on one (its module
# fixtures: a trained model, a server, built once)
PYTEST_WORKERS ?= -n 3 --dist loadfile --no-loadscope-reorder

test: $(STAMP) system-test tools ## Run the test suite (installs missing system packages first)
	$(BIN)/pytest -q $(PYTEST_WORKERS)

test-fast: $(STAMP) system-test tools ## Run the tests not marked slow
	$(BIN)/pytest -q $(PYTEST_WORKERS) -m "not slow"

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) system-bench ## Run every benchmark (ours vs peer vs floor); one: make bench NAME=ingest
	$(BIN)/python -m benchmarks $(NAME)

# the fault soak (tests/soak): SOAK_RUNS tiny pipeline runs under injected faults, invariants checked after each;
# not in CI (tests/soak/test_soak_short.py is). SOAK_ARGS: more options (python -m tests.soak --help)
SOAK_RUNS ?= 200
SOAK_SEED ?= 1
SOAK_ARGS ?=
.PHONY: soak
soak: $(STAMP) ## Run the pipeline SOAK_RUNS times under faults (S3 5xx/timeouts, Redis restarts, SIGKILL, full disk)
	$(call ensure_packages,redis-server)
	$(BIN)/python -m tests.soak --runs $(SOAK_RUNS) --seed $(SOAK_SEED) $(SOAK_ARGS)

compile: $(STAMP) ## Regenerate generated files: compiled pipeline, CronWorkflows, alert rules, Feast files, Helm values/schema, manifests/
	$(BIN)/kfloop compile --config $(CLUSTER_CONFIG) --out pipelines/compiled/training.yaml
	$(BIN)/kfloop report pipeline --config $(CLUSTER_CONFIG) --out pipelines/compiled/report.yaml
	$(BIN)/kfloop catalog pipeline --config $(CLUSTER_CONFIG) --out pipelines/compiled/catalog.yaml
	$(BIN)/kfloop schedules render --config $(CLUSTER_CONFIG) --out pipelines/compiled/schedules
	$(BIN)/kfloop alerts rules --config $(CLUSTER_CONFIG) --out pipelines/compiled/alert-rules.yaml
	$(BIN)/kfloop grafana --config $(CLUSTER_CONFIG) --out $(GRAFANA_DASHBOARD)
	$(BIN)/kfloop features repo --config $(CONFIG) --out feature_repo/feature_store.yaml
	$(BIN)/kfloop features repo --config $(CLUSTER_CONFIG) --out feature_repo/cluster/feature_store.yaml
	$(BIN)/kfloop chart values --config $(CLUSTER_CONFIG) --out $(CHART_VALUES)
	$(BIN)/kfloop chart schema --out $(CHART)/values.schema.json
	$(MAKE) --no-print-directory manifests

manifests: $(STAMP) ## Regenerate manifests/ (kustomize base + overlays dev, prod) from the Helm chart
	$(BIN)/kfloop chart manifests --config $(CLUSTER_CONFIG) --out manifests

check-compiled: $(STAMP) ## Fail if pipelines/compiled/ (pipeline, CronWorkflows, alert rules) is stale
	$(BIN)/kfloop compile --config $(CLUSTER_CONFIG) --out .kfloop/check/training.yaml >/dev/null
	diff -q pipelines/compiled/training.yaml .kfloop/check/training.yaml || \
		(echo "pipelines/compiled/training.yaml is stale: run make compile" && exit 1)
	$(BIN)/kfloop schedules render --config $(CLUSTER_CONFIG) --out .kfloop/check/schedules >/dev/null
	diff -rq pipelines/compiled/schedules .kfloop/check/schedules || \
		(echo "pipelines/compiled/schedules is stale: run make compile" && exit 1)
	$(BIN)/kfloop alerts rules --config $(CLUSTER_CONFIG) --out .kfloop/check/alert-rules.yaml >/dev/null
	diff -q pipelines/compiled/alert-rules.yaml .kfloop/check/alert-rules.yaml || \
		(echo "pipelines/compiled/alert-rules.yaml is stale: run make compile" && exit 1)
	$(BIN)/kfloop grafana --config $(CLUSTER_CONFIG) --out .kfloop/check/grafana.json >/dev/null
	diff -q $(GRAFANA_DASHBOARD) .kfloop/check/grafana.json || \
		(echo "$(GRAFANA_DASHBOARD) is stale: run make compile" && exit 1)
	$(BIN)/kfloop chart values --config $(CLUSTER_CONFIG) | diff -q $(CHART_VALUES) - || \
		(echo "$(CHART_VALUES) is stale: run make compile" && exit 1)
	$(BIN)/kfloop chart schema | diff -q $(CHART)/values.schema.json - || \
		(echo "$(CHART)/values.schema.json is stale: run make compile" && exit 1)
	$(BIN)/kfloop chart manifests --config $(CLUSTER_CONFIG) --out .kfloop/check/manifests >/dev/null
	diff -rq manifests .kfloop/check/manifests || (echo "manifests/ is stale: run make manifests" && exit 1)

docs: $(STAMP) ## Regenerate README.md's generated blocks (config reference, error statuses) from the code
	$(BIN)/python -m kfloop.docs README.md

clean: ## Remove the local workspace, build outputs and the benchmarks' venvs (keeps .venv)
	rm -rf .kfloop .bench build dist *.egg-info .pytest_cache .ruff_cache .venv-tools
