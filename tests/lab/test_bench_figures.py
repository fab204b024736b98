"""The lab benchmarks' figures, without a guest: percentiles, gap tracking, batch CPU share."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from temper_testing.lab.errors import LabError
from temper_testing.lab.guestjob import doc_block, write_doc_block
from temper_testing.lab.measure import latency_figures, percentile
from temper_testing.lab.restartgap import Sampler, _track, figures
from temper_testing.lab.variants import apply_variant, parse_variant
from temper_testing.lab.verdict import (
    TARGETS,
    agent_cost,
    batch_use_of_free_cpu,
    compare,
    judge,
    profile_verdicts,
    ratios,
)

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = ("alone", "alone_pinned", "stock", "partitioned", "stock_cpu_idle", "temper")


def bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_percentiles_are_nearest_rank() -> None:
    ordered = list(range(1, 101))
    assert (percentile(ordered, 50), percentile(ordered, 99), percentile(ordered, 100)) == (
        50,
        99,
        100,
    )
    assert percentile([7], 99.9) == 7
    assert latency_figures([5, 1, 3])["lc_p50_us"] == 3


def test_a_gap_runs_from_its_first_sample_out_to_the_first_sample_back() -> None:
    gaps: list[tuple[float, float]] = []
    since = None
    for now, out in [(0.0, False), (1.0, True), (2.0, True), (3.0, False), (4.0, True)]:
        since = _track(gaps, since, out, now)
    assert gaps == [(1.0, 3.0)]
    assert since == 4.0  # still out when sampling stopped: not counted as a gap


def test_gap_figures_and_phases() -> None:
    assert figures([30.0, 10.0, 20.0])["p50"] == 20.0
    assert figures([])["p50"] is None
    sampler = Sampler(canary_tid=1)
    sampler.changes = [(0.0, "enabled"), (1.0, "disabling"), (1.3, "disabled"), (1.4, "enabling")]
    sampler.changes.append((1.9, "enabled"))
    assert sampler.phases_since(0.5) == {"disabling": 300.0, "disabled": 100.0, "enabling": 500.0}


def phase(scenario: str, repeat: int, profile: str = "light", **figures: Any) -> dict[str, Any]:
    return {"scenario": scenario, "repeat": repeat, "profile": profile, **figures}


@pytest.mark.parametrize(
    ("trainer", "etl", "critical_cpus", "expected"),
    [(0.6, 0.37, 1, 97.0), (0.5, 0.0, 1, 50.0)],
)
def test_batch_use_of_the_cpu_critical_does_not_own(
    trainer: float, etl: float, critical_cpus: int, expected: float
) -> None:
    run = phase(
        "temper",
        0,
        pod_cpus={"lc": 0.3, "trainer": trainer, "etl": etl},
        layers_at_end={"critical": {"cur_nr_cpus": critical_cpus}},
    )
    use = batch_use_of_free_cpu([run, phase("stock", 0)], "light", 2)
    assert use["median"] == expected
    assert use["met"] is (expected >= 95)


def test_ratios_pair_each_repeat_with_its_own_baseline() -> None:
    runs = [
        phase("stock", 0, lc_p99_us=100),
        phase("temper", 0, lc_p99_us=50),
        phase("temper", 1, lc_p99_us=90),
        phase("stock", 1, lc_p99_us=60),
        phase("temper", 2, lc_p99_us=10),  # no stock in repeat 2: no ratio
        phase("stock", 0, "heavy", lc_p99_us=1),
    ]
    assert ratios(runs, "light", "temper", "stock", "lc_p99_us") == [0.5, 1.5]


def test_the_agents_cost_is_temper_over_the_same_config_without_it_per_repeat() -> None:
    runs = [
        phase("temper", 0, lc_p99_us=30, lc_p999_us=40, lc_cpu_us_per_request=50),
        phase("temper:direct", 0, lc_p99_us=20, lc_p999_us=40, lc_cpu_us_per_request=50),
        phase("temper", 1, lc_p99_us=18, lc_p999_us=30, lc_cpu_us_per_request=45),
        phase("temper:direct", 1, lc_p99_us=20, lc_p999_us=20, lc_cpu_us_per_request=50),
    ]
    cost = agent_cost(runs, "light")
    assert cost["lc_p99_us"]["per_repeat"] == [1.5, 0.9]
    assert cost["lc_p99_us"]["repeats_above_1"] == 1
    assert cost["lc_p999_us"]["repeats_above_1"] == 1, "equal is not worse"
    assert cost["lc_cpu_us_per_request"]["median"] == 0.95
    assert agent_cost([r for r in runs if r["scenario"] == "temper"], "light") == {}


def test_the_verdict_is_the_median_and_says_when_one_repeat_decides() -> None:
    steady = judge([0.5, 0.6, 0.7, 0.6, 0.55], lambda m: m < 1)
    assert (steady["median"], steady["met"], steady["fragile"]) == (0.6, True, False)
    # Two of five repeats over the line: the median holds, but dropping one low repeat flips.
    close = judge([0.9, 1.2, 0.95, 1.3, 1.0], lambda m: m < 1)
    assert (close["median"], close["met"]) == (1.0, False)
    assert close["fragile"] is True
    assert judge([], lambda m: True)["met"] is None


def test_every_target_is_judged_per_profile_against_its_own_base() -> None:
    runs = []
    for repeat in range(3):
        runs += [
            phase("alone", repeat, lc_p99_us=100, lc_p999_us=150, lc_cpu_us_per_request=1000),
            phase("alone_pinned", repeat, lc_p99_us=80, lc_p999_us=120, lc_cpu_us_per_request=900),
            phase("stock", repeat, lc_p99_us=400, lc_p999_us=900, lc_cpu_us_per_request=1500),
            phase("stock_cpu_idle", repeat, lc_p99_us=300, lc_p999_us=600),
            phase("temper", repeat, lc_p99_us=110, lc_p999_us=700, lc_cpu_us_per_request=1200),
        ]
    verdicts = profile_verdicts(runs, "light", 2)
    assert set(verdicts) == {t.name for t in TARGETS} | {"batch_use_of_free_cpu_pct"}
    assert verdicts["p99_below_stock"]["median"] == 0.275
    assert verdicts["p999_below_stock_cpu_idle"]["met"] is False
    assert verdicts["p99_within_1.2x_alone"]["met"] is True
    assert verdicts["p99_within_1.2x_alone_pinned"]["median"] == 1.375
    assert verdicts["cpu_per_request_within_1.1x_alone"]["met"] is False
    assert verdicts["batch_use_of_free_cpu_pct"]["met"] is None  # no pod CPU figures given


def test_a_variant_changes_one_field_of_the_planned_config() -> None:
    config = [
        {"name": "critical", "matches": [[]], "kind": {"Confined": {"protected": True}}},
        {"name": "low", "matches": [[]], "kind": {"Open": {"weight": 2}}},
    ]
    variant = parse_variant("short:critical.protected=false,*.slice_us=5000")
    changed = apply_variant(config, variant)
    assert changed[0]["kind"]["Confined"] == {"protected": False, "slice_us": 5000}
    assert changed[1]["kind"]["Open"] == {"weight": 2, "slice_us": 5000}
    assert config[0]["kind"]["Confined"] == {"protected": True}  # the original is untouched
    assert variant.scenario == "temper:short"


def test_a_variant_can_change_a_layers_kind_and_keep_its_fields() -> None:
    config = [{"name": "critical", "matches": [[]], "kind": {"Confined": {"protected": True}}}]
    changed = apply_variant(config, parse_variant('g:critical.kind="Grouped"'))
    assert changed[0]["kind"] == {"Grouped": {"protected": True}}
    with pytest.raises(LabError, match="not one of"):
        apply_variant(config, parse_variant('g:critical.kind="Loose"'))


def test_a_bare_name_is_the_experiments_baseline_with_no_change() -> None:
    variant = parse_variant("direct")
    assert (variant.name, variant.changes, variant.scenario) == ("direct", (), "temper:direct")
    config = [{"name": "low", "matches": [[]], "kind": {"Open": {"weight": 1}}}]
    assert apply_variant(config, variant) == config


@pytest.mark.parametrize(
    "text",
    ["direct", 'g:critical.kind="Grouped",*.slice_us=5000', "quiet:agent.observe=off"],
)
def test_a_variant_spec_reads_back_as_the_same_variant(text: str) -> None:
    variant = parse_variant(text)
    assert variant.spec == text
    assert parse_variant(variant.spec) == variant


def test_the_reports_reproduce_line_survives_the_shell() -> None:
    report = json.loads((REPO / "bench" / "reports" / "interference.json").read_text())
    line = bench_module("interference").render_markdown(report).split("## Reproduce")[1]
    argv = shlex.split(line.strip().strip("`").strip())
    specs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--variant"]
    assert specs, line
    for spec in specs:
        name = spec.partition(":")[0]
        changes = [tuple(c) for c in report["settings"]["variants"][name]]
        assert list(parse_variant(spec).changes) == changes


@pytest.mark.parametrize(
    "text",
    ["x:", ":critical.protected=false", "x:critical=1", "x:critical.slice_us=five", "a b"],
)
def test_a_malformed_variant_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(LabError):
        parse_variant(text)


def test_an_agent_variant_runs_the_agent_with_its_flags_and_no_config_change() -> None:
    variant = parse_variant("unobserved:agent.observe=off,agent.sample_budget_per_s=50")
    assert variant.agent_args == ["--observe=off", "--sample-budget-per-s=50"]
    assert parse_variant("unprotected:critical.protected=false").agent_args == []
    with pytest.raises(LabError, match="not both"):
        parse_variant("mixed:agent.observe=off,critical.protected=false")


def test_a_variant_naming_an_unknown_layer_is_refused() -> None:
    config = [{"name": "low", "matches": [[]], "kind": {"Open": {}}}]
    with pytest.raises(LabError, match="no layer 'crit'"):
        apply_variant(config, parse_variant("x:crit.protected=true"))


def test_layer_counters_are_medians_per_enforced_scenario_and_layer() -> None:
    interference = bench_module("interference")
    runs = [
        phase("temper", n, layers_at_end={"critical": {"total": 40, "preempt": p, "cpus": [1]}})
        for n, p in enumerate([0.1, 0.3, 0.2])
    ]
    runs.append(phase("stock", 0))
    counters = interference.layer_counters(runs)
    assert counters == {"temper": {"critical": {"total": 40.0, "preempt": 0.2}}}  # lists aren't
    assert "| temper | critical |" in "\n".join(
        interference._counters_section({"layer_counters": counters})
    )
    counters["temper"]["critical"]["total"] = 0.0  # an interval that saw no critical event
    assert "No critical-layer event was counted" in "\n".join(
        interference._counters_section({"layer_counters": counters})
    )


def test_temper_is_compared_with_the_hard_partition_per_repeat_without_a_verdict() -> None:
    interference = bench_module("interference")
    runs = [
        phase(s, n, lc_p99_us=p99, lc_p999_us=p99 * 2, lc_cpu_us_per_request=100)
        for n, (temper, partition) in enumerate([(90, 100), (120, 100), (80, 100)])
        for s, p99 in (("temper", temper), ("partitioned", partition))
    ]

    against = compare(runs, "light", "temper", "partitioned")

    assert against["lc_p99_us"]["per_repeat"] == [0.9, 1.2, 0.8]
    assert against["lc_p99_us"]["median"] == 0.9
    assert against["lc_p99_us"]["repeats_above_1"] == 1
    text = "\n".join(interference._partition_section({"against_partition": {"light": against}}))
    assert "| light | 0.90 (0.80-1.20), above 1 in 1 of 3 |" in text
    assert "met" not in text  # a reference, not a target
    assert interference._partition_section({"against_partition": {"light": {}}}) == []


def test_what_reaches_across_cpus_is_a_median_rate_per_scenario_and_profile() -> None:
    interference = bench_module("interference")
    irqs = {"cpu0": {"RES": 30, "CAL": 0}, "cpu1": {"RES": 0, "CAL": 10}}
    runs = [
        phase("temper", n, phase_s=10.0, host={"emulator_cpus": e}, interrupts=irqs)
        for n, e in enumerate([0.05, 0.2, 0.1])
    ]
    runs.append(phase("stock", 0))  # recorded before these figures were: left out

    rows = interference.cross_cpu(runs)

    assert rows == {
        "temper/light": {
            "emulator_cpus": 0.1,
            "cpu0_RES": 3.0,
            "cpu0_CAL": 0.0,
            "cpu1_RES": 0.0,
            "cpu1_CAL": 1.0,
        }
    }
    assert "| temper | light | 0.1 |" in "\n".join(
        interference._cross_cpu_section({"cross_cpu": rows})
    )


def test_the_demo_summary_shows_figures_and_verdicts() -> None:
    demo = bench_module("demo")
    figures = dict.fromkeys(demo.SCENARIO_FIELDS, 7)
    verdict = {"median": 0.5, "min": 0.4, "max": 0.9, "met": True, "fragile": False}
    interference = {
        "kernel": "7.3.4+deb13-amd64",
        "scheduler_ops": "layered_1.1.2_x86_64_unknown_linux_gnu",
        "vm": {"cpus": 2, "accel": "tcg,thread=single", "cores": 2, "qemu": "QEMU 7.2"},
        "profiles": {
            "light": {
                "scenarios": {key: {**figures, "lc_max_us": 9} for key in SCENARIOS},
                "verdicts": {"p99_below_stock": {**verdict, "limit": 1.0}},
            }
        },
        "caveats": ["tcg"],
    }
    gap = {"restart_gap_ms": {"p50": 400.0, "p99": 900.0, "max": 950.0}, "caveats": ["sampler"]}
    result = demo.summary(interference, gap)
    assert result["vm"] == {"cpus": 2, "accel": "tcg,thread=single", "qemu": "QEMU 7.2"}
    light = result["profiles"]["light"]
    assert set(light["scenarios"]["temper"]) == set(demo.SCENARIO_FIELDS)
    assert light["verdicts"]["p99_below_stock"] == verdict
    assert result["caveats"] == ["tcg", "sampler"]
    text = demo.table(result)
    assert "p99_below_stock" in text
    assert "0.50 (0.40-0.90) met" in text
    assert "restart gap (idle guest): p50 400.0 ms" in text


def test_restart_gap_report_leaves_out_replacements_no_sample_saw() -> None:
    restart_gap = bench_module("restart_gap")

    def condition(gaps: list[float], phases: list[dict[str, float]]) -> dict[str, Any]:
        return {"state": figures(gaps), "canary": figures(gaps), "phases_ms": phases}

    seen = {"disabling": 70.0, "disabled": 200.0, "enabling": 130.0}
    guest = {
        "restarts": 3,
        "sample_interval_ms": 1.0,
        "stop_start": figures([25000.0]),
        "idle": condition([0.0, 400.0, 600.0], [{}, seen, seen]),
        "saturated": condition([900.0], [seen]),
    }
    report = restart_gap.build_report(guest, "7.3.4+deb13-amd64", 0, 100.0, ["host busy"])
    assert report["restart_gap_ms"] == {"p50": 400.0, "p99": 600.0, "max": 600.0}
    assert report["figures"]["idle"]["unobserved"] == 1
    assert report["guest"]["idle"]["state"]["n"] == 3  # the raw figures stay as measured
    assert report["target"]["met"] is False
    text = restart_gap.render_markdown(report)
    assert "**missed**" in text
    assert any("no sample saw" in note for note in report["caveats"])
    assert report["caveats"][0] == "host busy"


def test_a_doc_block_is_appended_once_then_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "lab.md"
    doc.write_text("# Lab\n\nprose\n")
    assert doc_block("figs", doc) is None
    write_doc_block("figs", "make figs", "one", doc)
    doc.write_text(doc.read_text() + "\nafter\n")
    write_doc_block("figs", "make figs", "two\nlines", doc)
    assert doc_block("figs", doc) == "two\nlines"
    assert doc.read_text() == (
        "# Lab\n\nprose\n\n<!-- figs: make figs -->\ntwo\nlines\n<!-- /figs -->\n\nafter\n"
    )


def test_the_agent_free_host_layer_leaves_out_experiments_that_run_the_agent() -> None:
    interference = bench_module("interference")
    layers = {
        "critical": {
            "total": 10,
            "util": 15.0,
            "sel_local": 1.0,
            "enq_wakeup": 1.0,
            "preempt_fail": 1.0,
            "preempt": 1.0,
        },
        "host": {"util": 11.0},
    }
    report = {
        "settings": {"variants": {"direct": [], "unobserved": [["agent", "observe", "off"]]}},
        "layer_counters": {
            "temper": layers,
            "temper:direct": {"host": {"util": 5.0}},
            "temper:unobserved": {"host": {"util": 9.0}},
        },
    }
    (text,) = [line for line in interference._layers_paragraph(report) if line]
    assert "the host layer used 5.0-5.0%" in text
