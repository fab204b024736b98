"""The Prometheus metrics: one scrape renders the newest snapshot, and nothing else."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from builders import full_snapshot
from temper.policy.lifecycle import Mode
from temper.policy.observe import Pressure, Snapshot
from temper.serve.metrics import METRIC_NAMES, build_registry, render_metrics


def scrape(snapshot: Snapshot | None) -> list[Sample]:
    text = render_metrics(build_registry(lambda: snapshot)).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    [match] = [s.value for s in samples if s.name == name and s.labels == labels]
    return match


def test_the_mode_is_one_hot_over_every_mode() -> None:
    samples = scrape(full_snapshot())
    modes = {s.labels["mode"]: s.value for s in samples if s.name == "temper_agent_mode"}
    assert modes == {mode.value: float(mode is Mode.ENFORCING) for mode in Mode}


def test_a_mode_this_build_does_not_know_is_still_shown() -> None:
    samples = scrape(replace(full_snapshot(), mode="warp-drive"))
    assert value(samples, "temper_agent_mode", mode="warp-drive") == 1
    assert value(samples, "temper_agent_mode", mode="enforcing") == 0


def test_tier_counters_carry_the_snapshots_counts() -> None:
    samples = scrape(full_snapshot())
    assert value(samples, "temper_tier_samples_total", tier="background") == 100
    assert value(samples, "temper_tier_run_seconds_total", tier="background") == 5.0
    assert value(samples, "temper_tier_runqueue_wait_seconds_total", tier="critical") == 0.25
    assert value(samples, "temper_tier_outside_layer_samples_total", tier="background") == 7
    assert value(samples, "temper_tier_smt_shared_samples_total", tier="critical") == 0
    assert value(samples, "temper_tier_threads", tier="background") == 10
    assert value(samples, "temper_snapshot_timestamp_seconds") == 1_700_000_000.5


def test_layers_show_use_in_cpus_and_a_ceiling_only_where_one_is_set() -> None:
    samples = scrape(full_snapshot())
    assert value(samples, "temper_layer_util_cpus", layer="critical", tier="critical") == 1.5
    assert value(samples, "temper_layer_cpus", layer="system", tier="") == 2
    assert value(samples, "temper_layer_tasks", layer="system", tier="") == 30
    ceilings = [s.labels["layer"] for s in samples if s.name == "temper_layer_max_cpus"]
    assert ceilings == ["critical"]


def test_pressure_is_in_seconds_and_pods_need_a_tier() -> None:
    samples = scrape(full_snapshot())
    assert value(samples, "temper_node_cpu_pressure_seconds_total", kind="some") == 12.5
    assert value(samples, "temper_node_cpu_pressure_seconds_total", kind="full") == 3.0
    assert value(samples, "temper_node_cpu_pressure_avg10_percent", kind="some") == 1.5
    pods = {
        (s.labels["pod"], s.labels["tier"], s.labels["kind"]): s.value
        for s in samples
        if s.name == "temper_pod_cpu_pressure_seconds_total"
    }
    assert pods == {
        ("shop/api", "critical", "some"): 2.0,
        ("batch/crunch", "background", "some"): 40.0,
    }


def test_a_pressure_file_without_a_full_line_shows_some_only() -> None:
    samples = scrape(replace(full_snapshot(), node_pressure=Pressure(1.0, 1.0, 5)))
    kinds = [s.labels["kind"] for s in samples if s.name.startswith("temper_node_cpu_pressure")]
    assert kinds == ["some", "some"]


def test_lint_verdicts_are_one_hot_with_findings_counted() -> None:
    samples = scrape(full_snapshot())
    verdicts = {
        s.labels["verdict"]: s.value
        for s in samples
        if s.name == "temper_lint_verdict" and s.labels["rule"] == "smt-siblings"
    }
    assert verdicts == {"pass": 0, "fail": 1, "unknown": 0}
    assert value(samples, "temper_lint_findings", rule="smt-siblings") == 2
    assert value(samples, "temper_lint_findings", rule="cpu-manager") == 0


def test_the_sampler_reports_its_cost_and_settings() -> None:
    samples = scrape(full_snapshot())
    assert value(samples, "temper_sampler_samples_total") == 140
    assert value(samples, "temper_sampler_exited_threads_total") == 3
    assert value(samples, "temper_sampler_deferred_total") == 9
    assert value(samples, "temper_sampler_rounds_total") == 50
    assert value(samples, "temper_sampler_budget_threads_per_second") == 2000
    assert value(samples, "temper_sampler_interval_seconds", **{"class": "critical"}) == 0.1
    assert value(samples, "temper_observe_problems") == 1


def test_a_populated_snapshot_emits_every_family_and_nothing_else() -> None:
    names = {s.name for s in scrape(full_snapshot())}
    assert names == set(METRIC_NAMES)  # no process_*, python_* or *_created series either


def test_before_the_first_snapshot_a_scrape_is_empty() -> None:
    assert render_metrics(build_registry(lambda: None)) == b""


def test_each_scrape_reads_the_newest_snapshot() -> None:
    snapshots = iter([full_snapshot(), replace(full_snapshot(), mode="stock")])
    registry = build_registry(lambda: next(snapshots))
    first, second = (render_metrics(registry).decode() for _ in range(2))
    assert 'temper_agent_mode{mode="enforcing"} 1.0' in first
    assert 'temper_agent_mode{mode="stock"} 1.0' in second


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_help_strings_are_sentences(name: str) -> None:
    text = render_metrics(build_registry(full_snapshot)).decode()
    [help_line] = [line for line in text.splitlines() if line.startswith(f"# HELP {name} ")]
    sentence = help_line.removeprefix(f"# HELP {name} ")
    assert sentence[0].isupper(), sentence
    assert sentence.endswith("."), sentence
