"""Protobuf values to and from the domain's: every tier, unknown numbers, pod references."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.api.v1 import agent_pb2 as pb
from temper.api.wire import pod_from_wire, pod_to_wire, tier_from_wire, tier_or_none, tier_to_wire
from temper.policy.assignments import PodKey
from temper.policy.errors import InputError
from temper.policy.tiers import Tier

TIER_NAMES = "critical, high, normal, low, background"
KNOWN = {int(number) for number in pb.Tier.values()}
INT32 = st.integers(-(2**31), 2**31 - 1)

pod_keys = st.builds(
    PodKey,
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
)


def refusal(number: int, field: str = "tier") -> str:
    with pytest.raises(InputError) as caught:
        tier_from_wire(number, field)
    return str(caught.value)


# -- tiers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", list(Tier))
def test_every_tier_survives_the_wire(tier: Tier) -> None:
    number = tier_to_wire(tier)
    assert pb.Tier.Name(number) == f"TIER_{tier.name}"
    assert tier_from_wire(number) is tier
    assert tier_or_none(number) is tier


def test_the_wire_has_exactly_the_domain_tiers() -> None:
    assert {int(tier_to_wire(t)) for t in Tier} == KNOWN - {pb.TIER_UNSPECIFIED}
    assert len({tier_to_wire(t) for t in Tier}) == len(Tier)


def test_no_tier_is_unspecified_on_the_wire() -> None:
    assert tier_to_wire(None) == pb.TIER_UNSPECIFIED
    assert tier_or_none(pb.TIER_UNSPECIFIED) is None


def test_an_unspecified_tier_is_required() -> None:
    assert refusal(pb.TIER_UNSPECIFIED) == f"tier: required (one of {TIER_NAMES})"
    assert refusal(0, field="tiers[0]") == f"tiers[0]: required (one of {TIER_NAMES})"


@pytest.mark.parametrize("number", [6, 99, -1, 2**31 - 1, -(2**31)])
def test_an_unknown_tier_number_names_the_field(number: int) -> None:
    message = refusal(number, field="tiers[2]")
    assert message == f"tiers[2]: unknown value {number} (one of {TIER_NAMES})"
    assert tier_or_none(number) is None


@given(INT32)
def test_any_int32_is_a_tier_or_a_named_refusal(number: int) -> None:
    if number in KNOWN - {pb.TIER_UNSPECIFIED}:
        assert tier_to_wire(tier_from_wire(number, "t")) == number
        assert tier_or_none(number) is tier_from_wire(number, "t")
    else:
        assert refusal(number, field="request.tier").startswith("request.tier: ")
        assert tier_or_none(number) is None


def test_an_unknown_tier_in_a_message_is_refused_not_a_key_error() -> None:
    """Proto3 enums are open: a newer peer's value arrives as a plain number."""
    request = pb.AssignTierRequest(tier=42)  # type: ignore[arg-type]
    assert request.tier == 42
    assert refusal(request.tier).startswith("tier: unknown value 42")


# -- pods ----------------------------------------------------------------------------------------


def test_a_pod_reference_becomes_a_key_and_back() -> None:
    ref = pb.PodRef(namespace="shop", name="checkout-0")
    assert pod_from_wire(ref) == PodKey("shop", "checkout-0")
    assert pod_to_wire(PodKey("shop", "checkout-0")) == ref


def test_an_empty_pod_reference_names_both_fields() -> None:
    with pytest.raises(InputError) as caught:
        pod_from_wire(pb.PodRef())
    assert str(caught.value) == "pod.namespace: required; pod.name: required"


@pytest.mark.parametrize(
    ("namespace", "name", "message"),
    [
        ("Shop", "checkout-0", "request.pod.namespace: 'Shop' is not a DNS label"),
        ("shop", "../etc/passwd", "request.pod.name: '../etc/passwd' is not a DNS subdomain"),
        ("shop", "a\nb", "request.pod.name: 'a\\nb' is not a DNS subdomain"),
        ("", "checkout-0", "request.pod.namespace: required"),
    ],
)
def test_a_bad_pod_reference_names_the_given_field(namespace: str, name: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        pod_from_wire(pb.PodRef(namespace=namespace, name=name), field="request.pod")
    assert str(caught.value).startswith(message)


@given(pod_keys)
def test_pod_keys_round_trip_through_the_wire(key: PodKey) -> None:
    ref = pb.PodRef.FromString(pod_to_wire(key).SerializeToString())
    assert pod_from_wire(ref) == key
