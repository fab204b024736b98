"""The agent's contract with the cluster: its Node annotations and the kill switch rule.

Version 1 of the contract (docs/cluster.md): the agent owns exactly these keys on its own Node
and writes them with server-side apply under its own field manager.

- `temper.io/state`: `{"mode", "reason", "ops", "enable_seq", "config_sha256",
  "agent_version", "updated"}`; mode is one of `CONTRACT_MODES`.
- `temper.io/tier-load`: per tier `{"pods", "requested_millicpu", "used_millicpu"}`, every tier
  present, the input of the density-aware scheduler extender.

The operator owns `temper.io/safe-mode`, the fleet kill switch: see `kill_switch_value`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from temper.policy.lifecycle import Mode
from temper.policy.planner import Plan
from temper.policy.tiers import Tier

CONTRACT_VERSION = 1
STATE_KEY = "temper.io/state"
TIER_LOAD_KEY = "temper.io/tier-load"
SAFE_MODE_KEY = "temper.io/safe-mode"
FIELD_MANAGER = "temper-agent"

CONTRACT_MODES = ("observing", "enforcing", "safe-mode", "refused", "parked")
_CONTRACT_MODE = {
    Mode.STOCK: "observing",
    Mode.FOREIGN: "observing",  # another scheduler is loaded; the reason names it
    Mode.ENFORCING: "enforcing",
    Mode.SAFE_MODE: "safe-mode",
    Mode.REFUSED: "refused",
    Mode.PARKED: "parked",
}


@dataclass(frozen=True)
class KillSwitch:
    """What a `temper.io/safe-mode` value means."""

    on: bool
    note: str | None = None  # set when the value is not one of the documented two
    reason: str = ""  # where the value came from, for the transition it causes


OFF = KillSwitch(False)


def kill_switch_value(value: str | None) -> KillSwitch:
    """The documented rule: absent or "false" is off, "true" is on, anything else is on.

    Case and surrounding blanks are ignored. An unrecognised value ("yes", "1", garbage) turns
    safe mode on, because a kill switch that fails open is no kill switch; the note says why.
    """
    if value is None:
        return KillSwitch(False)
    word = value.strip().lower()
    if word == "false":
        return KillSwitch(False)
    if word == "true":
        return KillSwitch(True)
    shown = value if len(value) <= 40 else value[:40] + "..."
    note = f'{SAFE_MODE_KEY}={shown!r} is neither "true" nor "false"; treated as "true"'
    return KillSwitch(True, note)


def contract_mode(mode: Mode) -> str:
    return _CONTRACT_MODE[mode]


@dataclass(frozen=True)
class AgentState:
    mode: Mode
    reason: str
    ops: str | None
    enable_seq: int | None
    config_sha256: str | None
    agent_version: str
    updated: str  # RFC 3339, UTC

    def to_json(self) -> str:
        return json.dumps(
            {
                "mode": contract_mode(self.mode),
                "reason": self.reason,
                "ops": self.ops,
                "enable_seq": self.enable_seq,
                "config_sha256": self.config_sha256,
                "agent_version": self.agent_version,
                "updated": self.updated,
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class TierLoad:
    pods: int = 0
    requested_millicpu: int = 0
    used_millicpu: int = 0


def tier_load(plan: Plan, used_millicpu: Mapping[str, int]) -> dict[Tier, TierLoad]:
    """Per tier: its pods, their CPU requests, and their use (by pod uid; missing counts 0)."""
    load = {tier: TierLoad() for tier in Tier}
    for placement in plan.placements:
        pod = placement.pod
        current = load[placement.tier]
        load[placement.tier] = TierLoad(
            current.pods + 1,
            current.requested_millicpu + pod.cpu_request_millis,
            current.used_millicpu + used_millicpu.get(pod.uid, 0),
        )
    return load


def tier_load_json(load: Mapping[Tier, TierLoad]) -> str:
    return json.dumps(
        {
            tier.value: {
                "pods": entry.pods,
                "requested_millicpu": entry.requested_millicpu,
                "used_millicpu": entry.used_millicpu,
            }
            for tier, entry in load.items()
        },
        sort_keys=True,
    )


def node_apply_patch(node: str, annotations: Iterable[tuple[str, str]]) -> dict[str, object]:
    """The server-side apply body that sets only our annotations on `node`."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "annotations": dict(annotations)},
    }
