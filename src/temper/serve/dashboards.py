"""Grafana dashboards for Temper, built from code and committed as JSON.

A dashboard is a set of PromQL queries over the names `temper.serve.metrics` defines. Built here,
as plain dicts in Grafana's JSON model (schemaVersion 39, no Grafana library), a unit test can
check that every query names a metric the collector really emits, and that the committed files
(charts/temper/dashboards) are what this module builds. Each dashboard picks its Prometheus data
source and the nodes to show (`instance`, from `temper_agent_mode`).

    python -m temper.serve.dashboards --out charts/temper/dashboards    # write them
    python -m temper.serve.dashboards --check charts/temper/dashboards  # exit 1 if stale
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Json = dict[str, Any]

SCHEMA_VERSION = 39
PERCENT = "percentunit"  # Grafana's unit for a ratio shown as a percentage
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_INSTANCES = "label_values(temper_agent_mode, instance)"
_METRIC = re.compile(r"(?<![\w:$])temper_\w*")


def metric_names_in(expr: str) -> set[str]:
    """The Temper metric names a PromQL expression uses, as the exposition spells them."""
    return set(_METRIC.findall(expr))


def selected(metric: str) -> str:
    """The metric's series on the nodes the dashboard shows."""
    return f'{metric}{{instance=~"$instance"}}'


def rate(counter: str) -> str:
    return f"rate({selected(counter)}[$__rate_interval])"


def by(labels: str, expr: str) -> str:
    return f"sum by ({labels}) ({expr})"


# -- panels: `_layout` gives them ids and places them, two to a row unless `width` says ---------


def timeseries(title: str, exprs: Mapping[str, str], unit: str = "short", width: int = 12) -> Json:
    """A time series panel; `exprs` maps each query's legend to its expression."""
    return _panel("timeseries", title, exprs, unit, width)


def stat(title: str, expr: str, unit: str = "short", legend: str = "{{instance}}") -> Json:
    panel = _panel("stat", title, {legend: expr}, unit, width=6)
    panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    return panel


def table(title: str, expr: str, hide: Sequence[str] = ("Time", "Value", "__name__")) -> Json:
    """An instant query shown as a table, one row per series, its labels as columns."""
    panel = _panel("table", title, {"": expr}, "none", width=24)
    panel["targets"][0].update(format="table", instant=True, range=False)
    panel["transformations"] = [
        {"id": "organize", "options": {"excludeByName": dict.fromkeys(hide, True)}}
    ]
    return panel


def state_timeline(title: str, expr: str, legend: str) -> Json:
    """One row per series of a one-hot gauge, coloured while it is 1."""
    panel = _panel("state-timeline", title, {legend: expr}, "none", width=24)
    panel["fieldConfig"]["defaults"]["mappings"] = [
        {
            "type": "value",
            "options": {
                "0": {"text": "-", "color": "transparent", "index": 0},
                "1": {"text": "now", "color": "green", "index": 1},
            },
        }
    ]
    return panel


def _panel(kind: str, title: str, exprs: Mapping[str, str], unit: str, width: int) -> Json:
    targets = [
        {"datasource": _DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}
        for ref, (legend, expr) in zip(string.ascii_uppercase, exprs.items(), strict=False)
    ]
    return {
        "type": kind,
        "title": title,
        "datasource": _DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "gridPos": {"h": 8, "w": width, "x": 0, "y": 0},
    }


def _layout(panels: Sequence[Json]) -> list[Json]:
    """Number the panels from 1 and flow them left to right, top to bottom, 24 columns wide."""
    placed, x, y, row_height = [], 0, 0, 0
    for number, panel in enumerate(panels, start=1):
        w, h = panel["gridPos"]["w"], panel["gridPos"]["h"]
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        placed.append({**panel, "id": number, "gridPos": {"h": h, "w": w, "x": x, "y": y}})
        x, row_height = x + w, max(row_height, h)
    return placed


def dashboard(uid: str, title: str, description: str, panels: Sequence[Json]) -> Json:
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["temper"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": _variables()},
        "panels": _layout(panels),
    }


def _variables() -> list[Json]:
    datasource = {"name": "datasource", "label": "Data source", "type": "datasource"}
    instance = {
        "name": "instance",
        "label": "Node",
        "type": "query",
        "datasource": _DATASOURCE,
        "definition": _INSTANCES,
        "query": {"query": _INSTANCES, "refId": "instance"},
        "refresh": 2,  # on time range change: nodes come and go
        "includeAll": True,
        "multi": True,
        "sort": 1,
    }
    common = {"current": {}, "hide": 0, "options": [], "regex": ""}
    return [{**common, **datasource, "query": "prometheus"}, {**common, **instance}]


# -- the dashboards ------------------------------------------------------------------------------

_SAMPLES = "temper_tier_samples_total"


def _ratio(part: str, whole: str) -> str:
    """Per tier, how fast counter `part` grows against counter `whole`."""
    return f"{by('tier', rate(part))} / {by('tier', rate(whole))}"


def node_dashboard() -> Json:
    modes = selected("temper_agent_mode")
    wait = _ratio("temper_tier_runqueue_wait_seconds_total", "temper_tier_run_seconds_total")
    outside = _ratio("temper_tier_outside_layer_samples_total", _SAMPLES)
    smt = _ratio("temper_tier_smt_shared_samples_total", _SAMPLES)
    layers = {
        "{{layer}} used": by("layer", selected("temper_layer_util_cpus")),
        "{{layer}} owned": by("layer", selected("temper_layer_cpus")),
        "{{layer}} ceiling": by("layer", selected("temper_layer_max_cpus")),
    }
    node_psi = {"{{instance}} {{kind}}": rate("temper_node_cpu_pressure_seconds_total")}
    pod_psi = {"{{tier}}": by("tier", rate("temper_pod_cpu_pressure_seconds_total"))}
    panels = [
        state_timeline("Agent mode (the reason is in /observe)", modes, "{{instance}} {{mode}}"),
        timeseries("Threads per tier", {"{{tier}}": by("tier", selected("temper_tier_threads"))}),
        timeseries("Run-queue wait per second on a CPU, by tier", {"{{tier}}": wait}, PERCENT),
        timeseries("Samples outside their layer's CPUs, by tier", {"{{tier}}": outside}, PERCENT),
        timeseries("Samples on a core shared with a critical thread", {"{{tier}}": smt}, PERCENT),
        timeseries("Layer CPU use against CPUs owned", layers, "none", width=24),
        timeseries("Node CPU pressure: share of time stalled", node_psi, PERCENT),
        timeseries("Pod CPU pressure by tier: pod-seconds stalled per second", pod_psi, PERCENT),
        table("Node lint verdicts", selected("temper_lint_verdict") + " == 1"),
    ]
    description = "What Temper enforces on a node, and what its tiers' threads see."
    return dashboard("temper-node", "Temper / Node", description, panels)


def agent_cost_dashboard() -> Json:
    sampled = {
        "{{instance}} samples": rate("temper_sampler_samples_total"),
        "{{instance}} budget": selected("temper_sampler_budget_threads_per_second"),
    }
    lost = {
        "{{instance}} exited": rate("temper_sampler_exited_threads_total"),
        "{{instance}} deferred": rate("temper_sampler_deferred_total"),
    }
    intervals = {"{{instance}} {{class}}": selected("temper_sampler_interval_seconds")}
    panels = [
        timeseries("Thread samples per second against the budget", sampled),
        timeseries("Threads exited before their read, and samples deferred, per second", lost),
        timeseries("Sample interval", intervals, "s"),
        timeseries(
            "Observation rounds per second", {"{{instance}}": rate("temper_sampler_rounds_total")}
        ),
        stat("Observation problems (listed in /observe)", selected("temper_observe_problems")),
        stat("Snapshot age", "time() - " + selected("temper_snapshot_timestamp_seconds"), "s"),
    ]
    description = "What observing a node costs the agent, and how much of it the sampler covers."
    return dashboard("temper-agent-cost", "Temper / Agent cost", description, panels)


def build_dashboards() -> dict[str, Json]:
    """File name -> dashboard JSON model."""
    return {f"{d['uid']}.json": d for d in (node_dashboard(), agent_cost_dashboard())}


def render(model: Json) -> str:
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def stale_files(directory: Path) -> dict[str, str]:
    """The dashboard files in `directory` that are out of step with this module, and how."""
    built = {name: render(model) for name, model in build_dashboards().items()}
    on_disk = {path.name: path.read_text() for path in directory.glob("*.json")}
    problems = dict.fromkeys(built.keys() - on_disk.keys(), "missing")
    problems |= dict.fromkeys(on_disk.keys() - built.keys(), "not built here; delete it")
    problems |= {
        name: "differs" for name in built.keys() & on_disk.keys() if built[name] != on_disk[name]
    }
    return dict(sorted(problems.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m temper.serve.dashboards", description="Write or check Temper's dashboards."
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--out", type=Path, metavar="DIR", help="write the dashboards into DIR")
    action.add_argument("--check", type=Path, metavar="DIR", help="exit 1 if DIR's are stale")
    args = parser.parse_args(argv)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, model in build_dashboards().items():
            (args.out / name).write_text(render(model))
        return 0
    stale = stale_files(args.check)
    for name, problem in stale.items():
        print(f"{args.check / name}: {problem}", file=sys.stderr)
    if stale:
        print(f"to rebuild: python -m temper.serve.dashboards --out {args.check}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
