"""How `temper plan` prints a plan: for scx_layered (json), tools (explain), people (table)."""

from __future__ import annotations

import json
from typing import Any

from temper.policy.machine import format_cpu_list
from temper.policy.planner import Plan
from temper.policy.scx import LayerSpec

FORMATS = ("table", "json", "explain")


def render(plan: Plan, fmt: str) -> str:
    if fmt == "json":
        return plan.config_json()
    if fmt == "explain":
        return json.dumps(explain(plan), indent=2) + "\n"
    return table(plan)


def explain(plan: Plan) -> dict[str, Any]:
    """The `--format explain` document: layers with their tier, pods with tier and layer."""
    return {
        "layers": [{"name": layer.name, "tier": _tier(layer)} for layer in plan.layers],
        "pods": [
            {
                "uid": p.pod.uid,
                "namespace": p.pod.namespace,
                "name": p.pod.name,
                "tier": p.tier.value,
                "tier_source": p.source.value,
                "layer": p.layer,
            }
            for p in plan.placements
        ],
        "warnings": list(plan.warnings),
    }


def table(plan: Plan) -> str:
    counts = {layer.name: 0 for layer in plan.layers}
    for placement in plan.placements:
        counts[placement.layer] += 1
    lines = [f"Machine: {plan.shape.describe()} (CPUs {format_cpu_list(plan.shape.cpus)})", ""]
    lines += _columns(
        ("LAYER", "TIER", "KIND", "WEIGHT", "CPUS", "UTIL", "PODS", "MATCHES"),
        [_layer_row(layer, counts[layer.name]) for layer in plan.layers],
    )
    lines.append("")
    lines += _columns(
        ("POD", "TIER", "SOURCE", "LAYER", "CPU REQ", "CPU LIM"),
        [
            (
                p.pod.key,
                p.tier.value,
                p.source.value,
                p.layer,
                f"{p.pod.cpu_request_millis}m",
                "-" if p.pod.cpu_limit_millis is None else f"{p.pod.cpu_limit_millis}m",
            )
            for p in plan.placements
        ],
    )
    lines.append("")
    lines += (
        ["Warnings:", *(f"  - {w}" for w in plan.warnings)] if plan.warnings else ["No warnings."]
    )
    return "\n".join(lines) + "\n"


def _layer_row(layer: LayerSpec, pods: int) -> tuple[str, ...]:
    """One table row; a profile's thread layer holds threads of pods, not pods, so says so."""
    cpus = "-" if layer.cpus_range is None else "{}-{}".format(*layer.cpus_range)
    util = "-" if layer.util_range is None else "{:.2f}-{:.2f}".format(*layer.util_range)
    flags = [f for f in ("protected", "exclusive", "preempt") if getattr(layer, f)]
    kind = layer.kind.value + (f" ({', '.join(flags)})" if flags else "")
    return (
        layer.name,
        _tier(layer),
        kind,
        str(layer.weight),
        cpus,
        util,
        str(pods),
        _matches(layer),
    )


def _matches(layer: LayerSpec) -> str:
    rules = sorted({m.rule.value for block in layer.matches for m in block})
    return f"{len(layer.matches)} x {'+'.join(rules)}" if rules else "everything else"


def _tier(layer: LayerSpec) -> str:
    return layer.tier.value if layer.tier is not None else "host"


def _columns(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
