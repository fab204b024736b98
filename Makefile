# One command per intent. Everything installs itself on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo plan api test test-fast check bench bench-lab scx-layered control-plane clean

$(STAMP): pyproject.toml
	rm -f $(VENV)/.installed-*
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

## demo: the lab proof: Temper vs stock beside batch, and the restart gap, in a sched_ext guest (~25 min)
demo: $(STAMP) scx-layered
	$(BIN)/python bench/demo.py

## plan: plan the bundled example node and print it as a table (seconds)
plan: $(STAMP)
	$(BIN)/temper plan --example --format table

## api: regenerate the gRPC code in src/temper/api/v1 and docs/api.md from proto/; print the API fingerprint (seconds)
api: $(STAMP)
	$(BIN)/python scripts/gen-api

## scx-layered: build the pinned scx_layered into the cache outside the repo (cold: ~20 min)
scx-layered:
	scripts/install-scx-layered

## control-plane: build kube-apiserver and Helm, fetch etcd, into the cache outside the repo (cold: ~15 min)
control-plane:
	scripts/install-control-plane

## test: every test tier: unit, integration, scx, control plane, kernel lab (cold: ~40 min, warm: ~10 min)
test: $(STAMP) scx-layered control-plane
	$(BIN)/pytest

## test-fast: unit and integration tiers only
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit tests/integration

## check: lint, format, types and import contracts
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## bench: planning time (10/100/500 pods), and the agent watching 250 of 5,000 pods; writes bench/reports/
bench: $(STAMP) control-plane
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/agent_watch.py

## bench-lab: the lab benchmarks into bench/reports/: interference (~15 min), restart gap (~50 min), CPU limit (~5 min), observation overhead on the host and in the guest (~30 min)
bench-lab: $(STAMP) scx-layered
	$(BIN)/python bench/interference.py
	$(BIN)/python bench/restart_gap.py
	$(BIN)/python bench/cpu_limit.py
	$(BIN)/python bench/observe_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
