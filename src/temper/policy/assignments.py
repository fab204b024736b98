"""Operator tier assignments: which pod, which tier, and the file that keeps them.

An operator assigns a tier to a pod by namespace and name (`temper-cli tier assign`). The name,
not the uid, is the key: a StatefulSet's pod or a Deployment's pod recreated under the same name
keeps its assignment, which is what an operator who pinned `shop/checkout-0` expects. The
planner applies assignments over priority and QoS (`temper.policy.tiers`).

Names are checked here, once, with the rules Kubernetes itself applies (a namespace is a DNS
label, a pod name a DNS subdomain), so a name with `/`, `..`, spaces or control characters never
reaches a file, a log line or the planner. The persisted form is a small versioned JSON document;
`parse_assignments` accepts only that, and names the entry at fault otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from temper.policy.errors import InputError
from temper.policy.tiers import Tier

FILE_VERSION = 1
# The planner reads assignments on every plan; a bound keeps a damaged or hostile file from
# costing more than a plan does. A node runs at most a few hundred pods.
MAX_ASSIGNMENTS = 10_000

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True, order=True)
class PodKey:
    """A pod by namespace and name; `str()` is "namespace/name", the planner's key."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def check_pod_key(namespace: str, name: str, field: str = "pod") -> list[str]:
    """Every problem with this namespace and name, each naming its field; empty when valid."""
    problems = []
    if not namespace:
        problems.append(f"{field}.namespace: required")
    elif not _DNS_LABEL.fullmatch(namespace):
        problems.append(
            f"{field}.namespace: {namespace[:80]!r} is not a DNS label (lowercase letters, "
            "digits and '-', at most 63 characters)"
        )
    if not name:
        problems.append(f"{field}.name: required")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append(
            f"{field}.name: {name[:80]!r} is not a DNS subdomain (lowercase letters, digits, "
            "'-' and '.', at most 253 characters)"
        )
    return problems


def pod_key(namespace: str, name: str) -> PodKey:
    """A checked PodKey; InputError naming the field otherwise."""
    problems = check_pod_key(namespace, name)
    if problems:
        raise InputError("; ".join(problems))
    return PodKey(namespace, name)


def parse_pod_key(text: str) -> PodKey:
    """ "namespace/name" as a checked PodKey; InputError naming the fault otherwise."""
    namespace, sep, name = text.partition("/")
    if not sep:
        raise InputError(f"pod {text[:80]!r}: give it as NAMESPACE/NAME")
    return pod_key(namespace, name)


def parse_assignments(data: object, source: str) -> dict[PodKey, Tier]:
    """The persisted document `{"version": 1, "assignments": {"ns/name": "tier"}}`."""
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: not a version {FILE_VERSION} assignments document")
    version = data.get("version")
    if type(version) is not int or version != FILE_VERSION:  # not True, not 1.0
        raise InputError(f"{source}: not a version {FILE_VERSION} assignments document")
    entries = data.get("assignments")
    if not isinstance(entries, Mapping):
        raise InputError(f"{source}: 'assignments' must be an object")
    if len(entries) > MAX_ASSIGNMENTS:
        raise InputError(f"{source}: {len(entries)} assignments, at most {MAX_ASSIGNMENTS}")
    parsed = {}
    for key, tier in entries.items():
        try:
            parsed[parse_pod_key(str(key))] = Tier.parse(str(tier))
        except (InputError, ValueError) as exc:
            raise InputError(f"{source}: assignment {str(key)[:80]!r}: {exc}") from None
    return parsed


def render_assignments(assignments: Mapping[PodKey, Tier]) -> dict[str, object]:
    """The persisted document, keys sorted so equal assignments give equal bytes."""
    entries = {str(key): assignments[key].value for key in sorted(assignments)}
    return {"version": FILE_VERSION, "assignments": entries}


def planner_assignments(assignments: Mapping[PodKey, Tier]) -> dict[str, Tier]:
    """The planner's form: "namespace/name" to tier."""
    return {str(key): tier for key, tier in assignments.items()}
