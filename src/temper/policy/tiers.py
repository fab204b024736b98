"""The five QoS tiers, and how a pod gets one.

A pod's tier comes from `spec.priority` (the value its PriorityClass sets), or, when it names no
PriorityClass, from its Kubernetes QoS class. An operator's assignment overrides both. Nothing a
pod's author controls directly (labels, annotations) can raise a tier: priority is guarded by
Kubernetes admission and quota, and assignments are the operator's.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Tier(enum.Enum):
    """A QoS tier. Declaration order is rank order: CRITICAL is highest."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    BACKGROUND = "background"

    @property
    def rank(self) -> int:
        """0 for CRITICAL up to 4 for BACKGROUND: lower rank, higher tier."""
        return _RANK[self]

    def above(self, other: Tier) -> bool:
        """True when this tier is strictly higher than `other`."""
        return self.rank < other.rank

    @classmethod
    def parse(cls, text: str) -> Tier:
        """The tier named `text`; ValueError naming the valid tiers otherwise."""
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise ValueError(f"unknown tier {text!r} (tiers: {names})") from None


TIERS: tuple[Tier, ...] = tuple(Tier)
_RANK = {tier: index for index, tier in enumerate(Tier)}


class QosClass(enum.Enum):
    """The Kubernetes QoS class of a pod (`status.qosClass`)."""

    GUARANTEED = "Guaranteed"
    BURSTABLE = "Burstable"
    BEST_EFFORT = "BestEffort"


class TierSource(enum.Enum):
    """Why a pod is in its tier, as `temper plan --format explain` reports it."""

    OPERATOR = "operator"
    PRIORITY = "priority"
    QOS_DEFAULT = "qos-default"


# Defaults, each with its reason. All are settings (TierSettings) an operator can override.
#
# System priority classes (system-node-critical, system-cluster-critical: >= 1e9) carry node
# plumbing (kube-proxy, CNI agents, Temper itself). It must run promptly but must not cost whole
# exclusive cores, so it lands in HIGH, not CRITICAL (docs/planning.md#how-a-pod-gets-its-tier).
SYSTEM_PRIORITY = 1_000_000_000
# The remaining bands sit between the recommended PriorityClass values below, so each
# temper-* class lands in its own tier with room for a cluster's own classes around it.
DEFAULT_PRIORITY_BANDS: tuple[tuple[int, Tier], ...] = (
    (SYSTEM_PRIORITY, Tier.HIGH),
    (1_000_000, Tier.CRITICAL),
    (100_000, Tier.HIGH),
    (1_000, Tier.NORMAL),
    (0, Tier.LOW),
)
# Priorities below the lowest band (negative ones) are BACKGROUND.
DEFAULT_BELOW_BANDS = Tier.BACKGROUND

# The PriorityClasses the Helm chart ships. Also used when a manifest names one of them but
# carries no `spec.priority` (the API server fills it in; a raw manifest may not have it).
RECOMMENDED_PRIORITY_CLASSES: Mapping[str, int] = {
    "temper-critical": 1_000_000,
    "temper-high": 100_000,
    "temper-normal": 10_000,
    "temper-low": 100,
    "temper-background": -100,
    # Built into every cluster; their values are fixed by Kubernetes.
    "system-node-critical": 2_000_001_000,
    "system-cluster-critical": 2_000_000_000,
}

# A pod without a PriorityClass keeps the treatment Kubernetes already gives its QoS class:
# Guaranteed pods asked for dedicated capacity, BestEffort pods asked for nothing.
DEFAULT_QOS_TIERS: Mapping[QosClass, Tier] = {
    QosClass.GUARANTEED: Tier.HIGH,
    QosClass.BURSTABLE: Tier.NORMAL,
    QosClass.BEST_EFFORT: Tier.BACKGROUND,
}


@dataclass(frozen=True)
class TierSettings:
    """How pods map to tiers. The defaults are documented above, each with its reason."""

    priority_bands: tuple[tuple[int, Tier], ...] = DEFAULT_PRIORITY_BANDS
    below_bands: Tier = DEFAULT_BELOW_BANDS
    qos_tiers: Mapping[QosClass, Tier] = field(default_factory=lambda: dict(DEFAULT_QOS_TIERS))
    known_priority_classes: Mapping[str, int] = field(
        default_factory=lambda: dict(RECOMMENDED_PRIORITY_CLASSES)
    )

    def tier_for_priority(self, priority: int) -> Tier:
        """The tier of a pod with this `spec.priority`: the first band whose floor it reaches."""
        for floor, tier in sorted(self.priority_bands, key=lambda band: band[0], reverse=True):
            if priority >= floor:
                return tier
        return self.below_bands


@dataclass(frozen=True)
class TierDecision:
    tier: Tier
    source: TierSource


def decide_tier(
    qos: QosClass,
    priority_class: str | None,
    priority: int | None,
    settings: TierSettings,
    assigned: Tier | None = None,
) -> TierDecision:
    """The tier of one pod, and why.

    `priority` is `spec.priority`; when a PriorityClass is named without it, the class's known
    value is used, and an unknown class falls back to the QoS default (the caller warns).
    """
    if assigned is not None:
        return TierDecision(assigned, TierSource.OPERATOR)
    if priority_class:
        if priority is None:
            priority = settings.known_priority_classes.get(priority_class)
        if priority is not None:
            return TierDecision(settings.tier_for_priority(priority), TierSource.PRIORITY)
    return TierDecision(settings.qos_tiers[qos], TierSource.QOS_DEFAULT)
