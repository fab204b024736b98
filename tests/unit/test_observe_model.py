"""Observation values: PSI text parsed, and the `/observe` document a snapshot turns into."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from builders import full_snapshot
from temper.policy.observe import (
    Pressure,
    ThreadStat,
    ThreadView,
    parse_pressure,
)
from temper.policy.tiers import Tier

# As /proc/pressure/cpu prints it (a kernel since 5.13 adds the `full` line; cgroups have it too).
PSI_WITH_FULL = (
    "some avg10=2.38 avg60=1.27 avg300=0.85 total=1896882855\n"
    "full avg10=0.50 avg60=0.10 avg300=0.00 total=12345\n"
)
PSI_SOME_ONLY = "some avg10=0.00 avg60=0.04 avg300=0.11 total=987654321\n"


def test_psi_with_a_full_line_is_parsed_whole() -> None:
    assert parse_pressure(PSI_WITH_FULL) == Pressure(
        some_avg10=2.38,
        some_avg60=1.27,
        some_total_us=1_896_882_855,
        full_avg10=0.50,
        full_total_us=12345,
    )


def test_psi_without_a_full_line_has_no_full_numbers() -> None:
    pressure = parse_pressure(PSI_SOME_ONLY)
    assert pressure == Pressure(0.0, 0.04, 987_654_321)
    assert pressure.full_avg10 is None
    assert pressure.full_total_us is None


def test_psi_lines_may_come_in_any_order() -> None:
    some, full = PSI_WITH_FULL.splitlines()
    assert parse_pressure(f"{full}\n{some}") == parse_pressure(PSI_WITH_FULL)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", id="no-some-line"),
        pytest.param("some avg10=x avg60=0.00 avg300=0.00 total=0\n", id="not-a-number"),
        pytest.param("some avg10=0.00 avg60=0.00 avg300=0.00 total=1.5\n", id="fractional-total"),
        pytest.param("some avg10=0.00 avg300=0.00 total=0\n", id="some-without-avg60"),
        pytest.param("some avg10=0.00 avg60=0.00 avg300=0.00\n", id="some-without-total"),
        pytest.param(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00\n",
            id="full-without-total",
        ),
        pytest.param("<html>not psi</html>\n", id="garbage"),
    ],
)
def test_malformed_psi_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message varies with the fault)
        parse_pressure(text)


def test_a_thread_is_known_by_its_tid_and_start_time() -> None:
    first = ThreadStat(tid=42, start_ticks=1000, comm="w", last_cpu=0, run_ns=5, wait_ns=1)
    later = ThreadStat(tid=42, start_ticks=1000, comm="w", last_cpu=3, run_ns=500, wait_ns=9)
    reused = ThreadStat(tid=42, start_ticks=2000, comm="w", last_cpu=0, run_ns=5, wait_ns=1)
    assert first.key == later.key == (42, 1000)
    assert reused.key != first.key


DOCUMENT_KEYS = {
    "version",
    "taken_at",
    "machine",
    "mode",
    "tiers",
    "layers",
    "top_threads",
    "lint",
    "pressure",
    "sampler",
    "problems",
}
TOP = ThreadView(
    tid=4242,
    comm="worker 1",
    pod="shop/api",
    tier=Tier.CRITICAL,
    last_cpu=2,
    cpu_pct=97.5,
    wait_pct=1.25,
    in_layer=True,
)


def observe_document() -> dict[str, object]:
    snapshot = replace(full_snapshot(), top_threads=(TOP,))
    document: dict[str, object] = json.loads(json.dumps(snapshot.to_json()))
    return document


def test_the_observe_document_is_json_with_the_documented_keys() -> None:
    document = observe_document()
    assert set(document) == DOCUMENT_KEYS
    assert document["version"] == 1
    assert document["mode"] == {
        "mode": "enforcing",
        "reason": "scx_layered is loaded and places every pod",
    }
    assert document["problems"] == ["/proc/77/schedstat: permission denied"]


def test_the_document_describes_the_machine_in_counts() -> None:
    machine = observe_document()["machine"]
    assert isinstance(machine, dict)
    assert {k: machine[k] for k in ("cpus", "cores", "llcs", "numa_nodes", "smt")} == {
        "cpus": 4,
        "cores": 2,
        "llcs": 1,
        "numa_nodes": 1,
        "smt": True,
    }
    assert isinstance(machine["describe"], str)


def test_enums_become_their_values_in_the_document() -> None:
    document = observe_document()
    assert document["tiers"] == [
        {
            "tier": "critical",
            "pods": 1,
            "threads": 4,
            "samples": 40,
            "run_s": 2.5,
            "wait_s": 0.25,
            "outside_layer": 0,
            "smt_shared": 0,
        },
        {
            "tier": "background",
            "pods": 2,
            "threads": 10,
            "samples": 100,
            "run_s": 5.0,
            "wait_s": 3.0,
            "outside_layer": 7,
            "smt_shared": 12,
        },
    ]
    layers = document["layers"]
    assert isinstance(layers, list)
    assert [(layer["name"], layer["tier"], layer["cpus"]) for layer in layers] == [
        ("critical", "critical", [0, 2]),
        ("system", None, [1, 3]),
    ]
    assert document["top_threads"] == [
        {
            "tid": 4242,
            "comm": "worker 1",
            "pod": "shop/api",
            "tier": "critical",
            "last_cpu": 2,
            "cpu_pct": 97.5,
            "wait_pct": 1.25,
            "in_layer": True,
        }
    ]


def test_lint_results_carry_verdict_evidence_and_hint() -> None:
    lint = observe_document()["lint"]
    assert lint == [
        {
            "rule": "smt-siblings",
            "verdict": "fail",
            "summary": "critical shares cores",
            "evidence": ["cpu 0", "cpu 2"],
            "hint": "",
        },
        {
            "rule": "cpu-manager",
            "verdict": "pass",
            "summary": "static CPU manager is off",
            "evidence": [],
            "hint": "",
        },
    ]


def test_pressure_shows_the_node_and_only_pods_with_a_known_tier() -> None:
    pressure = observe_document()["pressure"]
    assert isinstance(pressure, dict)
    assert pressure["node"] == {
        "some_avg10": 1.5,
        "some_avg60": 2.0,
        "some_total_us": 12_500_000,
        "full_avg10": 0.5,
        "full_total_us": 3_000_000,
    }
    assert list(pressure["pods"]) == ["batch/crunch", "shop/api"]  # sorted; gone/pod has no tier
    assert pressure["pods"]["shop/api"]["tier"] == "critical"
    assert pressure["pods"]["shop/api"]["some_total_us"] == 2_000_000


def test_no_node_pressure_is_an_empty_object() -> None:
    document = replace(full_snapshot(), node_pressure=None).to_json()
    assert document["pressure"]["node"] == {}


def test_the_sampler_shows_its_settings_and_counters() -> None:
    assert observe_document()["sampler"] == {
        "budget_per_s": 2000.0,
        "critical_interval_s": 0.1,
        "other_interval_s": 1.0,
        "samples": 140,
        "exited": 3,
        "skipped": 9,
        "rounds": 50,
    }
