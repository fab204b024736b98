"""Verdicts for the interference benchmark: per-repeat ratios, their median and spread.

Run-to-run noise in a TCG guest is large, and one wild repeat once carried a whole report's
headline. So nothing here judges pooled figures. Every target is a ratio taken *within* one
repeat (temper against a baseline measured minutes apart in the same interleaved round), and
the verdict is the median of those per-repeat ratios, with their spread beside it. A verdict is
`fragile` when leaving out any single repeat would flip it: then one repeat decides, and the
report says so.

Input is the guest's list of runs (`temper_testing.lab.interference`): dicts with `scenario`,
`profile`, `repeat` and the figures. Pure: no I/O.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Run = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """`scenario`'s `metric` over `base`'s, per repeat; met when the median is within `limit`."""

    name: str
    metric: str
    base: str
    limit: float
    strict: bool = False  # True: the median must be below the limit, not merely at it


# What the product promises for the critical pod, per LC profile (issue: the critical pod's
# tail): beat both stock baselines on p99 and p99.9; stay within 1.2x of the LC alone, both
# spread out and on Temper's own placement; pay at most 10% more CPU per request than alone.
TARGETS = (
    Target("p99_below_stock", "lc_p99_us", "stock", 1.0, strict=True),
    Target("p99_below_stock_cpu_idle", "lc_p99_us", "stock_cpu_idle", 1.0, strict=True),
    Target("p999_below_stock", "lc_p999_us", "stock", 1.0, strict=True),
    Target("p999_below_stock_cpu_idle", "lc_p999_us", "stock_cpu_idle", 1.0, strict=True),
    Target("p99_within_1.2x_alone", "lc_p99_us", "alone", 1.2),
    Target("p99_within_1.2x_alone_pinned", "lc_p99_us", "alone_pinned", 1.2),
    Target("cpu_per_request_within_1.1x_alone", "lc_cpu_us_per_request", "alone", 1.1),
    Target(
        "cpu_per_request_within_1.1x_alone_pinned", "lc_cpu_us_per_request", "alone_pinned", 1.1
    ),
)
BATCH_TARGET_PCT = 95.0


def ratios(runs: Sequence[Run], profile: str, scenario: str, base: str, metric: str) -> list[float]:
    """`metric` of `scenario` over `base` in each repeat that has both, in repeat order."""
    by_repeat: dict[tuple[str, int], Run] = {
        (r["scenario"], r["repeat"]): r for r in runs if r.get("profile") == profile
    }
    out = []
    for (name, repeat), run in sorted(by_repeat.items(), key=lambda item: item[0][1]):
        other = by_repeat.get((base, repeat))
        if name == scenario and other and other.get(metric) and run.get(metric) is not None:
            out.append(round(run[metric] / other[metric], 3))
    return out


def judge(values: Sequence[float], passes: Callable[[float], bool]) -> dict[str, Any]:
    """Median, spread and verdict of per-repeat values; `fragile` when one repeat decides."""
    if not values:
        return {"per_repeat": [], "median": None, "min": None, "max": None, "met": None}
    median = statistics.median(values)
    met = passes(median)
    left_out = [
        passes(statistics.median([*values[:i], *values[i + 1 :]]))
        for i in range(len(values) if len(values) > 1 else 0)
    ]
    return {
        "per_repeat": list(values),
        "median": round(median, 3),
        "min": min(values),
        "max": max(values),
        "met": met,
        "fragile": any(v != met for v in left_out),
    }


def judge_target(
    runs: Sequence[Run], profile: str, target: Target, scenario: str
) -> dict[str, Any]:
    values = ratios(runs, profile, scenario, target.base, target.metric)
    limit = target.limit
    verdict = judge(values, (lambda m: m < limit) if target.strict else (lambda m: m <= limit))
    return {**verdict, "limit": limit, "strict": target.strict, "base": target.base}


def batch_use_of_free_cpu(
    runs: Sequence[Run], profile: str, cpus: int, scenario: str = "temper"
) -> dict[str, Any]:
    """How much of the CPU the critical layer does not own the batch pods kept busy, in %.

    Per phase: the batch pods' CPU time (their cgroups) over the phase's wall time, over
    (node CPUs - CPUs the critical layer owned at the end). Above 100 means the batch also ran
    on a critical CPU while the LC idled (a layer that lends its CPUs).
    """
    values = []
    for r in runs:
        if r["scenario"] != scenario or r.get("profile") != profile or not r.get("pod_cpus"):
            continue
        critical = (r.get("layers_at_end") or {}).get("critical", {})
        free = cpus - critical.get("cur_nr_cpus", 1)
        batch = sum(v for pod, v in r["pod_cpus"].items() if pod != "lc")
        if free > 0:
            values.append(round(batch / free * 100, 1))
    verdict = judge(values, lambda m: m >= BATCH_TARGET_PCT)
    return {**verdict, "limit": BATCH_TARGET_PCT}


def profile_verdicts(
    runs: Sequence[Run], profile: str, cpus: int, scenario: str = "temper"
) -> dict[str, Any]:
    """Every target for one LC profile, for `scenario` (temper, or an experiment's)."""
    verdicts = {t.name: judge_target(runs, profile, t, scenario) for t in TARGETS}
    verdicts["batch_use_of_free_cpu_pct"] = batch_use_of_free_cpu(runs, profile, cpus, scenario)
    return verdicts


def mean_of(runs: Sequence[Run], profile: str, scenario: str, metric: str) -> float | None:
    """The mean of `metric` over `scenario`'s phases for `profile` (None when none)."""
    values = [
        r[metric]
        for r in runs
        if r["scenario"] == scenario and r.get("profile") == profile and metric in r
    ]
    return round(statistics.fmean(values), 3) if values else None


# The experiment that runs the planned config without the agent (`--variant direct`).
AGENT_FREE = "temper:direct"
AGENT_COST_METRICS = ("lc_p99_us", "lc_p999_us", "lc_cpu_us_per_request")


def agent_cost(runs: Sequence[Run], profile: str) -> dict[str, dict[str, Any]]:
    """What the agent itself costs the critical pod: `temper` over `AGENT_FREE` (the same
    config, scx_layered started directly). Empty when the run had no agent-free baseline."""
    return compare(runs, profile, "temper", AGENT_FREE)


def compare(runs: Sequence[Run], profile: str, scenario: str, base: str) -> dict[str, Any]:
    """`scenario` over `base` per repeat, for each of `AGENT_COST_METRICS`, with how many
    repeats came out above 1; empty when the run lacks either. No limit: it explains, it does
    not judge."""
    out = {}
    for metric in AGENT_COST_METRICS:
        values = ratios(runs, profile, scenario, base, metric)
        if values:
            out[metric] = {
                "per_repeat": values,
                "median": round(statistics.median(values), 3),
                "min": min(values),
                "max": max(values),
                "repeats_above_1": sum(v > 1.0 for v in values),
            }
    return out
