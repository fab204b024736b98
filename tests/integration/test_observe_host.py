"""Observation end to end on this machine's own kernel, which has no sched_ext.

`python -m temper_testing.lab.observe` runs the lab's pods as real processes in real cgroups (the
machine's cgroup2 mount, without the cpu controller in this container), the agent over a host root
of symlinks into the real /proc and /sys, and reads `/observe`, `/metrics` and a 5 s trace from a
real tracefs. The agent refuses to enforce (no sched_ext) and observes anyway: that is the
observation-first promise (docs/observe.md#observation-first). Needs root, a writable cgroup2 mount
and tracefs; a machine without them fails these tests with the reason (they never skip).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from temper.host.psi import PressureReader
from temper.host.threads import read_pod_threads
from temper_testing.lab.observe import find_cgroup2_root, host_root_view
from temper_testing.lab.proof import PODS

pytestmark = pytest.mark.timeout(600)


def cgroup2_root() -> Path:
    """A writable cgroup2 mount of this machine; the test fails with the reason without one."""
    found = find_cgroup2_root() if os.geteuid() == 0 else None
    if found is None:
        reason = f"needs root and a writable cgroup2 mount (uid {os.geteuid()})"
        pytest.fail(reason, pytrace=False)
    return found


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, scx_layered: Path) -> dict:
    cgroups = cgroup2_root()
    work = tmp_path_factory.mktemp("observe")
    root = host_root_view(work, cgroups)
    out = work / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "temper_testing.lab.observe",
            *("--out", str(out), "--work", str(work), "--scx-layered", str(scx_layered)),
            *("--host-root", str(root), "--cgroup-root", str(cgroups)),
            *("--tracefs", str(work / "tracing")),
        ],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert out.exists(), done.stderr[-3000:]
    result: dict = json.loads(out.read_text())
    assert result["error"] is None, json.dumps(result, indent=1)[-4000:]
    assert done.returncode == 0
    return result


def test_observe_shows_every_pods_threads_with_their_tiers(observed: dict) -> None:
    doc = observed["observe"]
    assert doc["mode"]["mode"] == "refused"
    assert "sched_ext" in doc["mode"]["reason"]
    tiers = {t["tier"]: t for t in doc["tiers"]}
    planned = {p.pod.key for p in PODS}
    assert set(doc["pressure"]["pods"]) == planned
    for tier in ("critical", "high", "normal", "low", "background"):
        assert tiers[tier]["pods"] >= 1, tier
        assert tiers[tier]["threads"] >= 2, tier  # each pod: a main thread and named threads
        assert tiers[tier]["samples"] >= 1, tier
    checkout = [t for t in doc["top_threads"] if t["pod"] == "shop/checkout"]
    assert checkout
    assert {t["tier"] for t in checkout} == {"critical"}
    assert doc["sampler"]["samples"] >= sum(t["samples"] for t in doc["tiers"]) > 0
    assert doc["problems"] == []
    assert doc["pressure"]["node"]["some_total_us"] > 0


def test_the_linter_says_why_the_node_does_not_enforce(observed: dict) -> None:
    verdicts = {r["rule"]: r for r in observed["observe"]["lint"]}
    refused = verdicts["node-not-enforcing"]
    assert refused["verdict"] == "fail"
    assert "refused" in refused["evidence"][0]
    assert refused["hint"]
    assert verdicts["cpu-limit-not-enforced"]["verdict"] == "pass"  # limits hold on stock
    assert verdicts["pod-wrong-layer"]["verdict"] == "unknown"
    # No cpuset controller here, so nothing is pinned: the rule stays quiet.
    assert observed["pinned"] is None
    assert verdicts["partial-cpu-affinity"]["verdict"] == "pass"


def test_metrics_agree_with_observe(observed: dict) -> None:
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(observed["metrics"])
        for s in family.samples
    }
    assert samples[("temper_agent_mode", (("mode", "refused"),))] == 1
    threads = {t["tier"]: t["threads"] for t in observed["observe"]["tiers"]}
    for tier, count in threads.items():
        assert samples[("temper_tier_threads", (("tier", tier),))] == count
    verdict = (("rule", "node-not-enforcing"), ("verdict", "fail"))
    assert samples[("temper_lint_verdict", verdict)] == 1


def test_a_five_second_trace_opens_and_summarises_per_tier(observed: dict) -> None:
    trace = observed["trace"]
    assert trace["tiers"] == ["critical", "low"]
    assert 4.5 <= trace["seconds"] <= 8
    assert trace["events"] > 0
    assert observed["trace_head"][0].startswith("# tracer: nop")
    rows = {row["tier"]: row for row in trace["wake_to_run"]}
    # Their threads wake every 50 ms: a 5 s capture holds dozens of wakeups of each tier.
    for tier in ("critical", "low"):
        assert rows[tier]["count"] >= 20, rows[tier]
        assert 0 <= rows[tier]["p50_us"] <= rows[tier]["p99_us"] <= rows[tier]["max_us"]


def test_cgroups_removed_mid_read_are_skipped_not_raised(tmp_path: Path) -> None:
    """E2 against the real cgroup2: a pod cgroup whose containers are made and removed in a
    loop (scx's cg_stress.sh pattern) while its threads and pressure are read in a loop."""
    cgroups = cgroup2_root()
    root = host_root_view(tmp_path, cgroups)
    pod = cgroups / f"temper-e2-{os.getpid()}"
    pod.mkdir()
    stop = threading.Event()
    churned = 0

    def churn() -> None:
        nonlocal churned
        while not stop.is_set():
            for name in ("a", "b", "c"):
                with contextlib.suppress(OSError):
                    (pod / name).mkdir()
            for name in ("a", "b", "c"):
                with contextlib.suppress(OSError):
                    (pod / name).rmdir()
            churned += 1

    worker = threading.Thread(target=churn)
    worker.start()
    reads, pressure = 0, PressureReader(root)
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            read_pod_threads(root, pod.name)
            pressure.read_cgroup(f"{pod.name}/a")
            reads += 1
    finally:
        stop.set()
        worker.join()
        pressure.close()
        pod.rmdir()
    assert reads > 100
    assert churned > 100


def test_temper_cli_works_the_node_over_the_agents_socket(observed: dict) -> None:
    """status, config, reload and a streamed trace through temper-cli, as root on the host
    (the permission tests are in test_api.py). Without sched_ext the node stays refused."""
    cli = observed["cli"]
    for step in ("status", "diff", "reload", "status_after", "trace"):
        assert cli[step]["exit"] == 0, (step, cli[step]["stderr"])
    status = cli["status"]["answer"]
    assert status["mode"] == "refused"
    assert status["kernel_gate"]["passed"] is False
    assert "sched_ext" in status["kernel_gate"]["reason"]
    assert cli["reload"]["answer"]["mode"] == "refused"  # a reload cannot make it enforce
    tiers = {t["tier"] for t in status["tiers"]}
    assert {"TIER_CRITICAL", "TIER_LOW"} <= tiers
    trace = cli["trace"]["answer"]
    assert int(trace["size_bytes"]) == cli["trace_file_bytes"] > 0
    rows = {row["tier"]: row for row in trace["wake_to_run"]}
    assert int(rows["TIER_CRITICAL"]["count"]) >= 20, rows
    audited = [(r["method"], r["outcome"], r["message"]) for r in cli["audit"]]
    assert audited == [
        ("Reload", "OK", ""),
        ("CaptureTrace", "OK", "capture started"),
        ("CaptureTrace", "OK", "capture finished"),
    ]
