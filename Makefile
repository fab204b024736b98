# One command per intent. Everything installs itself on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo plan api test test-fast check bench bench-lab scx-layered control-plane image release verify-release clean

# `## target: what it does (cold TIME, warm TIME)` is each target's help; cold is a first run on a
# fresh machine, warm one with the caches filled. README.md's command table and its opening
# commands quote the times word for word (tests/unit/test_make_targets.py).

$(STAMP): pyproject.toml
	rm -f $(VENV)/.installed-*
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

## demo: the lab proof: Temper vs stock beside batch, and the restart gap, in a sched_ext guest (cold ~35 min, warm ~25 min)
demo: $(STAMP) scx-layered
	$(BIN)/python bench/demo.py

## plan: plan the bundled example node and print it as a table (cold ~1 min, warm 1 s)
plan: $(STAMP)
	$(BIN)/temper plan --example --format table

## api: regenerate the gRPC code in src/temper/api/v1 and docs/api.md from proto/; print the API fingerprint (cold ~1 min, warm 2 s)
api: $(STAMP)
	$(BIN)/python scripts/gen-api

## scx-layered: build the pinned scx_layered into the cache outside the repo (cold ~7 min, warm 0 s)
scx-layered:
	scripts/install-scx-layered

## control-plane: build kube-apiserver and Helm, fetch etcd, into the cache outside the repo (cold ~10 min, warm 0 s)
control-plane:
	scripts/install-control-plane

## image: the agent image as an OCI archive, dist/temper-agent-<version>.oci.tar, with no container daemon (cold ~8 min (estimate), warm ~1 min)
image: $(STAMP) scx-layered
	scripts/install-image-tools
	$(BIN)/python -m temper_release image

## release: the release in dist/: the image, its SPDX SBOM, the carry-patch, release.json and cosign signatures (cold ~15 min (estimate), warm ~2 min (estimate))
release: image
	scripts/install-cosign
	$(BIN)/python -m temper_release release

## verify-release: check every signature and digest of the release in dist/; KEY=publisher.pub to check who signed it (cold ~10 min (estimate), warm ~10 s (estimate))
verify-release: $(STAMP)
	scripts/install-cosign
	$(BIN)/python -m temper_release verify $(if $(KEY),--key $(KEY))

## test: every test tier: unit, integration, scx, control plane, kernel lab with a short `make demo` (cold ~60 min (estimate), warm ~28 min (estimate))
test: $(STAMP) scx-layered control-plane
	scripts/install-image-tools
	scripts/install-cosign
	$(BIN)/pytest

## test-fast: unit and integration tiers only (cold ~1 min, warm ~40 s)
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit tests/integration

## check: lint, format, types and import contracts (cold ~1 min, warm ~20 s)
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## bench: planning time (10/100/500 pods), and the agent watching 250 of 5,000 pods; writes bench/reports/ (cold ~15 min (estimate), warm ~5 min)
bench: $(STAMP) control-plane
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/agent_watch.py

## bench-lab: the lab benchmarks into bench/reports/: the lab's stability proof and emulator costs, interference, restart gap, CPU limit, observation overhead on the host and in the guest (cold ~165 min (estimate), warm ~155 min)
bench-lab: $(STAMP) scx-layered
	$(BIN)/python bench/lab_stability.py
	$(BIN)/python bench/lab_costs.py
	$(BIN)/python bench/interference.py
	$(BIN)/python bench/restart_gap.py
	$(BIN)/python bench/cpu_limit.py
	$(BIN)/python bench/observe_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
