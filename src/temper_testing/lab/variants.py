"""Planner experiments for the interference benchmark: the planned config with one change.

    --variant NAME:LAYER.FIELD=VALUE[,LAYER.FIELD=VALUE...]
    --variant NAME:agent.FLAG=VALUE[,agent.FLAG=VALUE...]
    --variant NAME

runs, beside the shipped `temper` scenario, a scenario `temper:NAME` whose scx_layered is given
the config the planner makes for the same pods, with each FIELD of LAYER's kind set to VALUE
(JSON: `true`, `5000`, `[1, 1]`). LAYER `*` means every layer. FIELD `kind` changes the
layer's kind itself (`"Grouped"`), keeping its fields. A bare NAME changes nothing: the planned
config as it is, on scx_layered started the same way. A config experiment runs without the
agent, unlike `temper`, so the bare one is the baseline its one change is told apart against
(the agent's own work, emulated, shows in the host layer). The other kind changes the agent
instead: `agent.FLAG=VALUE` runs temper-agent as `temper` does, with `--FLAG=VALUE` added
(VALUE as written, not JSON); the two kinds do not mix. Examples:

    direct                                   no change: the experiments' baseline

    unprotected:critical.protected=false     the critical layer lends its idle CPUs
    slice5ms:*.slice_us=5000                 every layer's slice 5 ms instead of 20 ms
    nopreempt:critical.preempt=false         critical waits for the running task's slice
    grouped:critical.kind="Grouped"          critical may also run on idle CPUs outside
    unobserved:agent.observe=off             the agent without its observation rounds

This is how docs/lab.md's experiments change one setting at a time without a product knob:
the change is applied to the rendered JSON, so a field the planner never sets (`slice_us`)
can be tried before it earns a setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from temper_testing.lab.errors import LabError

KINDS = ("Confined", "Grouped", "Open")
AGENT = "agent"  # the target of a change to the agent's flags, not a layer


@dataclass(frozen=True)
class Variant:
    name: str
    changes: tuple[tuple[str, str, Any], ...]  # (layer or "*", field, value)

    @property
    def scenario(self) -> str:
        return f"temper:{self.name}"

    @property
    def spec(self) -> str:
        """The `--variant` text `parse_variant` reads back as this variant."""
        changes = ",".join(
            f"{target}.{field}={value if target == AGENT else json.dumps(value)}"
            for target, field, value in self.changes
        )
        return f"{self.name}:{changes}" if changes else self.name

    @property
    def agent_args(self) -> list[str]:
        """The agent's extra flags; empty for a config experiment (run without the agent)."""
        return [
            f"--{field.replace('_', '-')}={value}"
            for target, field, value in self.changes
            if target == AGENT
        ]


def parse_variant(text: str) -> Variant:
    """`NAME:LAYER.FIELD=VALUE,...` or a bare `NAME` (no change) -> Variant; LabError naming
    what is wrong."""
    name, sep, body = text.partition(":")
    if not name or (sep and not body) or not name.replace("-", "").replace("_", "").isalnum():
        raise LabError(f"variant {text!r}: want NAME or NAME:LAYER.FIELD=VALUE[,...]")
    if not sep:
        return Variant(name, ())
    changes = []
    for item in body.split(","):
        target, eq, raw = item.partition("=")
        layer, dot, field = target.partition(".")
        if not (eq and dot and layer and field):
            raise LabError(f"variant {name!r}: {item!r} is not LAYER.FIELD=VALUE")
        if layer == AGENT:
            changes.append((layer, field, raw))
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LabError(f"variant {name!r}: {raw!r} is not a JSON value") from exc
        changes.append((layer, field, value))
    if len({layer == AGENT for layer, _, _ in changes}) > 1:
        raise LabError(f"variant {name!r}: change the agent's flags or the config, not both")
    return Variant(name, tuple(changes))


def apply_variant(config: list[dict[str, Any]], variant: Variant) -> list[dict[str, Any]]:
    """A copy of an scx_layered config (its parsed JSON) with the variant's changes made."""
    out: list[dict[str, Any]] = json.loads(json.dumps(config))
    names = {spec["name"] for spec in out}
    for layer, field, value in variant.changes:
        if layer != "*" and layer not in names:
            raise LabError(f"variant {variant.name!r}: no layer {layer!r} in {sorted(names)}")
        for spec in out:
            if layer not in ("*", spec["name"]):
                continue
            (body,) = spec["kind"].values()
            if field != "kind":
                body[field] = value
            elif value in KINDS:
                spec["kind"] = {value: body}
            else:
                raise LabError(f"variant {variant.name!r}: kind {value!r} is not one of {KINDS}")
    return out
