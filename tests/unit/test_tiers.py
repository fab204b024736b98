"""Tiers: their order, the priority bands at every edge, and how one pod's tier is decided."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.policy.tiers import (
    DEFAULT_QOS_TIERS,
    RECOMMENDED_PRIORITY_CLASSES,
    TIERS,
    QosClass,
    Tier,
    TierDecision,
    TierSettings,
    TierSource,
    decide_tier,
)

SETTINGS = TierSettings()
ORDER = [Tier.CRITICAL, Tier.HIGH, Tier.NORMAL, Tier.LOW, Tier.BACKGROUND]


def test_tiers_are_in_rank_order() -> None:
    assert list(TIERS) == ORDER
    assert [tier.rank for tier in ORDER] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("higher", "lower"), list(itertools.pairwise(ORDER)))
def test_above_is_strict(higher: Tier, lower: Tier) -> None:
    assert higher.above(lower)
    assert not lower.above(higher)
    assert not higher.above(higher)


@given(st.sampled_from(Tier), st.sampled_from(Tier))
def test_above_agrees_with_rank_and_is_antisymmetric(a: Tier, b: Tier) -> None:
    assert a.above(b) == (a.rank < b.rank)
    assert not (a.above(b) and b.above(a))


@pytest.mark.parametrize("tier", ORDER)
def test_parse_round_trips_every_tier(tier: Tier) -> None:
    assert Tier.parse(tier.value) is tier


@pytest.mark.parametrize("text", ["urgent", "Critical", "", " high"])
def test_parse_error_names_the_text_and_lists_the_tiers(text: str) -> None:
    with pytest.raises(ValueError, match="unknown tier") as caught:
        Tier.parse(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "critical, high, normal, low, background" in message


@pytest.mark.parametrize(
    ("priority", "tier"),
    [
        (2_000_001_000, Tier.HIGH),
        (2_000_000_000, Tier.HIGH),
        (1_000_000_000, Tier.HIGH),
        (999_999_999, Tier.CRITICAL),
        (1_000_000, Tier.CRITICAL),
        (999_999, Tier.HIGH),
        (100_000, Tier.HIGH),
        (99_999, Tier.NORMAL),
        (1_000, Tier.NORMAL),
        (999, Tier.LOW),
        (0, Tier.LOW),
        (-1, Tier.BACKGROUND),
        (-(2**31), Tier.BACKGROUND),
    ],
)
def test_tier_for_priority_at_band_edges(priority: int, tier: Tier) -> None:
    assert SETTINGS.tier_for_priority(priority) is tier


@pytest.mark.parametrize(
    ("name", "tier"),
    [
        ("temper-critical", Tier.CRITICAL),
        ("temper-high", Tier.HIGH),
        ("temper-normal", Tier.NORMAL),
        ("temper-low", Tier.LOW),
        ("temper-background", Tier.BACKGROUND),
        ("system-node-critical", Tier.HIGH),
        ("system-cluster-critical", Tier.HIGH),
    ],
)
def test_recommended_classes_land_in_their_tier(name: str, tier: Tier) -> None:
    assert SETTINGS.tier_for_priority(RECOMMENDED_PRIORITY_CLASSES[name]) is tier


def test_temper_critical_value() -> None:
    assert RECOMMENDED_PRIORITY_CLASSES["temper-critical"] == 1_000_000


_ORDINARY = st.integers(-(2**31), 999_999_999)


@given(_ORDINARY, _ORDINARY)
def test_higher_priority_never_lands_lower_below_system_band(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert not SETTINGS.tier_for_priority(low).above(SETTINGS.tier_for_priority(high))


def test_custom_bands_are_used_in_floor_order_whatever_their_order() -> None:
    settings = TierSettings(
        priority_bands=((0, Tier.NORMAL), (500, Tier.CRITICAL)), below_bands=Tier.LOW
    )
    assert settings.tier_for_priority(500) is Tier.CRITICAL
    assert settings.tier_for_priority(499) is Tier.NORMAL
    assert settings.tier_for_priority(0) is Tier.NORMAL
    assert settings.tier_for_priority(-1) is Tier.LOW


# --- decide_tier -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qos", "tier"),
    [
        (QosClass.GUARANTEED, Tier.HIGH),
        (QosClass.BURSTABLE, Tier.NORMAL),
        (QosClass.BEST_EFFORT, Tier.BACKGROUND),
    ],
)
@pytest.mark.parametrize("priority", [None, 0, 1_000_000, -100])
@pytest.mark.parametrize("priority_class", [None, ""])
def test_no_priority_class_means_the_qos_default(
    qos: QosClass, tier: Tier, priority: int | None, priority_class: str | None
) -> None:
    decision = decide_tier(qos, priority_class, priority, SETTINGS)
    assert decision == TierDecision(tier, TierSource.QOS_DEFAULT)


@pytest.mark.parametrize(
    ("priority", "tier"),
    [(1_000_000, Tier.CRITICAL), (100_000, Tier.HIGH), (50, Tier.LOW), (-5, Tier.BACKGROUND)],
)
@pytest.mark.parametrize("qos", list(QosClass))
def test_class_with_priority_uses_the_band(qos: QosClass, priority: int, tier: Tier) -> None:
    assert decide_tier(qos, "anything", priority, SETTINGS) == TierDecision(
        tier, TierSource.PRIORITY
    )


def test_stated_priority_wins_over_the_known_class_value() -> None:
    decision = decide_tier(QosClass.BURSTABLE, "temper-critical", -100, SETTINGS)
    assert decision == TierDecision(Tier.BACKGROUND, TierSource.PRIORITY)


@pytest.mark.parametrize(
    ("name", "tier"),
    [
        ("temper-critical", Tier.CRITICAL),
        ("temper-high", Tier.HIGH),
        ("temper-normal", Tier.NORMAL),
        ("temper-low", Tier.LOW),
        ("temper-background", Tier.BACKGROUND),
        ("system-node-critical", Tier.HIGH),
    ],
)
def test_known_class_without_priority_uses_its_value(name: str, tier: Tier) -> None:
    decision = decide_tier(QosClass.BEST_EFFORT, name, None, SETTINGS)
    assert decision == TierDecision(tier, TierSource.PRIORITY)


def test_settings_can_add_known_classes() -> None:
    settings = TierSettings(known_priority_classes={"batch": -10})
    assert decide_tier(QosClass.GUARANTEED, "batch", None, settings) == TierDecision(
        Tier.BACKGROUND, TierSource.PRIORITY
    )
    assert decide_tier(QosClass.GUARANTEED, "temper-critical", None, settings) == TierDecision(
        Tier.HIGH, TierSource.QOS_DEFAULT
    )


@pytest.mark.parametrize("qos", list(QosClass))
def test_unknown_class_without_priority_falls_back_to_the_qos_default(qos: QosClass) -> None:
    decision = decide_tier(qos, "team-gold", None, SETTINGS)
    assert decision == TierDecision(DEFAULT_QOS_TIERS[qos], TierSource.QOS_DEFAULT)


@given(
    st.sampled_from(QosClass),
    st.one_of(st.none(), st.sampled_from([*RECOMMENDED_PRIORITY_CLASSES, "unknown"])),
    st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    st.sampled_from(Tier),
)
def test_operator_assignment_always_wins(
    qos: QosClass, priority_class: str | None, priority: int | None, assigned: Tier
) -> None:
    decision = decide_tier(qos, priority_class, priority, SETTINGS, assigned=assigned)
    assert decision == TierDecision(assigned, TierSource.OPERATOR)


def test_settings_qos_tiers_override_the_defaults() -> None:
    settings = TierSettings(qos_tiers={**DEFAULT_QOS_TIERS, QosClass.GUARANTEED: Tier.CRITICAL})
    assert decide_tier(QosClass.GUARANTEED, None, None, settings).tier is Tier.CRITICAL
    assert decide_tier(QosClass.GUARANTEED, None, None, SETTINGS).tier is Tier.HIGH
