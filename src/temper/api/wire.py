"""Protobuf values to and from the domain's, in one place for the agent and its callers.

Proto3 enums are open: a peer may send a number this version does not know. Every conversion
from the wire checks it and names the field, so an unknown tier is an INVALID_ARGUMENT, not a
KeyError or a silent default.
"""

from __future__ import annotations

from temper.api.v1 import agent_pb2 as pb
from temper.policy.assignments import PodKey, check_pod_key
from temper.policy.errors import InputError
from temper.policy.tiers import Tier

_TO_WIRE: dict[Tier, pb.Tier.ValueType] = {
    Tier.CRITICAL: pb.TIER_CRITICAL,
    Tier.HIGH: pb.TIER_HIGH,
    Tier.NORMAL: pb.TIER_NORMAL,
    Tier.LOW: pb.TIER_LOW,
    Tier.BACKGROUND: pb.TIER_BACKGROUND,
}
_FROM_WIRE: dict[int, Tier] = {int(number): tier for tier, number in _TO_WIRE.items()}


def tier_to_wire(tier: Tier | None) -> pb.Tier.ValueType:
    return _TO_WIRE[tier] if tier is not None else pb.TIER_UNSPECIFIED


def tier_from_wire(number: int, field: str = "tier") -> Tier:
    """The tier a request names; InputError naming `field` for unspecified or unknown values."""
    if number == pb.TIER_UNSPECIFIED:
        raise InputError(f"{field}: required (one of {_tier_names()})")
    tier = _FROM_WIRE.get(number)
    if tier is None:
        raise InputError(f"{field}: unknown value {number} (one of {_tier_names()})")
    return tier


def tier_or_none(number: int) -> Tier | None:
    """A tier in an answer: None for unspecified (and for a value newer than this client)."""
    return _FROM_WIRE.get(number)


def pod_from_wire(pod: pb.PodRef, field: str = "pod") -> PodKey:
    problems = check_pod_key(pod.namespace, pod.name, field)
    if problems:
        raise InputError("; ".join(problems))
    return PodKey(pod.namespace, pod.name)


def pod_to_wire(key: PodKey) -> pb.PodRef:
    return pb.PodRef(namespace=key.namespace, name=key.name)


def _tier_names() -> str:
    return ", ".join(t.value for t in Tier)
