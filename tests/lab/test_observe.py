"""Observation in the lab guest, with the real scx_layered enforcing.

The same program as the host test (`python -m temper_testing.lab.observe`, see its docstring) runs
in a sched_ext guest with an SMT topology (2 cores x 2 threads): the lab's pods of all five tiers,
the agent enforcing them, then `/observe`, `/metrics` and a 5 s trace read back as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from temper_testing.lab.provision import LabKernel
from temper_testing.lab.vm import run_in_guest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def observed(
    lab_kernel: LabKernel, scx_layered: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    out = tmp_path_factory.mktemp("observe-guest")
    script = (
        f"cd {REPO} && {sys.executable} -m temper_testing.lab.observe --enforce "
        f"--scx-layered {scx_layered} --work /tmp/observe --out {out}/result.json"
    )
    result = run_in_guest(lab_kernel, script, shares=[(REPO, False), (out, True)], timeout_s=1000)
    print(result.output[-4000:])
    assert (out / "result.json").exists(), result.output[-4000:]
    report: dict = json.loads((out / "result.json").read_text())
    assert report["error"] is None, json.dumps(report, indent=1)[-4000:]
    assert result.returncode == 0
    return report


def test_observe_shows_layers_threads_and_tiers_while_enforcing(observed: dict) -> None:
    doc = observed["observe"]
    assert doc["mode"]["mode"] == "enforcing"
    assert doc["machine"]["smt"] is True
    layers = {layer["name"]: layer for layer in doc["layers"]}
    assert layers, "no per-layer statistics from scx_layered"
    by_tier = {layer["tier"] for layer in layers.values()}
    assert {"critical", "low"} <= by_tier
    assert sum(layer["tasks"] for layer in layers.values()) > 0
    tiers = {t["tier"]: t for t in doc["tiers"]}
    for tier in ("critical", "high", "normal", "low", "background"):
        assert tiers[tier]["threads"] >= 2, tier
        assert tiers[tier]["samples"] >= 1, tier
    critical = [t for t in doc["top_threads"] if t["tier"] == "critical"]
    assert critical
    assert all(t["in_layer"] is not None for t in critical)
    assert doc["problems"] == []


def test_the_linter_judges_the_enforced_node(observed: dict) -> None:
    verdicts = {r["rule"]: r for r in observed["observe"]["lint"]}
    assert verdicts["node-not-enforcing"]["verdict"] == "pass"
    assert verdicts["pod-wrong-layer"]["verdict"] == "pass", verdicts["pod-wrong-layer"]
    # The lab's Guaranteed pods carry CPU limits, which scx_layered does not enforce.
    limits = verdicts["cpu-limit-not-enforced"]
    assert limits["verdict"] == "fail"
    assert any("shop/checkout" in e for e in limits["evidence"])
    # Judged, not unknown: the layers' statistics came from scx_layered's socket.
    assert verdicts["protected-layer-at-ceiling"]["verdict"] != "unknown"


def test_the_linter_finds_the_planted_pinned_container(observed: dict) -> None:
    """temper_testing.lab.observe pins shop/cart's container to one CPU, as the static CPU manager
    would; scx_layered would send its threads to the low-priority fallback queue."""
    assert observed["pinned"], "the guest has no cpuset controller to plant the fault with"
    rule = {r["rule"]: r for r in observed["observe"]["lint"]}["partial-cpu-affinity"]
    assert rule["verdict"] == "fail"
    assert any("shop/cart" in line and "CPUs 3 of 0-3" in line for line in rule["evidence"])
    assert "fallback" in rule["hint"]


def test_metrics_show_the_layers(observed: dict) -> None:
    names = {
        s.name
        for family in text_string_to_metric_families(observed["metrics"])
        for s in family.samples
    }
    assert {"temper_layer_tasks", "temper_layer_cpus", "temper_tier_samples_total"} <= names


def test_a_five_second_trace_in_the_guest(observed: dict) -> None:
    trace = observed["trace"]
    assert trace["events"] > 0
    assert observed["trace_head"][0].startswith("# tracer: nop")
    rows = {row["tier"]: row for row in trace["wake_to_run"]}
    assert rows["critical"]["count"] >= 20, rows
    assert rows["low"]["count"] >= 20, rows


def test_temper_cli_reloads_and_captures_a_trace_in_the_guest(observed: dict) -> None:
    """An operator's session through temper-cli on the agent's socket, scx_layered enforcing."""
    cli = observed["cli"]
    for step in ("status", "diff", "reload", "status_after", "trace"):
        assert cli[step]["exit"] == 0, (step, cli[step]["stderr"])
    before = cli["status"]["answer"]
    assert before["mode"] == "enforcing"
    assert before["scheduler"]["ours"] is True
    reload = cli["reload"]["answer"]
    assert reload["mode"] == "enforcing", reload
    # The reload replaced the scheduler: the kernel enabled exactly one more instance.
    assert int(reload["enable_seq"]) == int(before["scheduler"]["enable_seq"]) + 1
    after = cli["status_after"]["answer"]
    assert after["scheduler"]["ours"] is True
    assert after["config_sha256"] == before["config_sha256"]  # the same plan, restarted
    assert not cli["diff"]["answer"].get("diff")  # running what was planned
    trace = cli["trace"]["answer"]
    assert int(trace["size_bytes"]) == cli["trace_file_bytes"] > 0  # streamed whole
    rows = {row["tier"]: row for row in trace["wake_to_run"]}
    assert int(rows["TIER_CRITICAL"]["count"]) >= 20, rows
    assert int(rows["TIER_LOW"]["count"]) >= 20, rows
    audited = [(r["method"], r["outcome"], r["message"]) for r in cli["audit"]]
    assert audited == [
        ("Reload", "OK", ""),
        ("CaptureTrace", "OK", "capture started"),
        ("CaptureTrace", "OK", "capture finished"),
    ]
