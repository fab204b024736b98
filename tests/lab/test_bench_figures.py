"""The lab benchmarks' figures, without a guest: percentiles, gap tracking, batch CPU share."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from temper.lab.measure import latency_figures, percentile
from temper.lab.restartgap import Sampler, _track, figures

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(
    ("trainer", "etl", "critical_cpus", "expected"),
    [(0.6, 0.37, 1, 97.0), (0.5, 0.0, 1, 50.0)],
)
def test_batch_use_of_the_cpu_critical_does_not_own(
    trainer: float, etl: float, critical_cpus: int, expected: float
) -> None:
    interference = bench_module("interference")
    run = {
        "scenario": "temper",
        "repeat": 0,
        "pod_cpus": {"lc": 0.3, "trainer": trainer, "etl": etl},
        "layers_at_end": {"critical": {"cur_nr_cpus": critical_cpus}},
    }
    use = interference.batch_use_of_free_cpu([run, {"scenario": "stock", "repeat": 0}], 2)
    assert use["mean_pct"] == expected
    assert use["met"] is (expected >= 95)
    assert interference.mean_pod_cpus([run])["temper"]["trainer"] == trainer


def test_the_demo_summary_has_the_promised_shape() -> None:
    demo = bench_module("demo")
    scenario = {
        "lc_p50_us": 1,
        "lc_p99_us": 2,
        "lc_p999_us": 3,
        "batch_ops_per_s": 4,
        "cpu_util_pct": 5.0,
        "lc_max_us": 9,
    }
    interference = {
        "kernel": "7.3.4+deb13-amd64",
        "scheduler_ops": "layered_1.1.2_x86_64_unknown_linux_gnu",
        "vm": {"cpus": 2, "accel": "tcg", "cores": 2},
        "scenarios": dict.fromkeys(("alone", "stock", "stock_cpu_idle", "temper"), scenario),
        "p99_ratio_to_alone": {"alone": 1.0, "stock": 2.0, "stock_cpu_idle": 1.5, "temper": 1.1},
        "caveats": ["tcg"],
    }
    gap = {"restart_gap_ms": {"p50": 400.0, "p99": 900.0, "max": 950.0}, "caveats": ["sampler"]}
    result = demo.summary(interference, gap)
    assert set(result) >= {
        "kernel",
        "scheduler_ops",
        "vm",
        "scenarios",
        "restart_gap_ms",
        "caveats",
    }
    assert result["vm"] == {"cpus": 2, "accel": "tcg"}
    assert set(result["scenarios"]["temper"]) == {
        "lc_p50_us",
        "lc_p99_us",
        "lc_p999_us",
        "batch_ops_per_s",
        "cpu_util_pct",
    }
    assert set(result["restart_gap_ms"]) == {"p50", "p99", "max"}
    assert result["caveats"] == ["tcg", "sampler"]
    assert "restart gap (idle guest): p50 400.0 ms" in demo.table(result)


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
