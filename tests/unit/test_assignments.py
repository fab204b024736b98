"""Operator tier assignments: pod keys as Kubernetes checks them, and the versioned document."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.policy.assignments import (
    MAX_ASSIGNMENTS,
    PodKey,
    check_pod_key,
    parse_assignments,
    parse_pod_key,
    planner_assignments,
    pod_key,
    render_assignments,
)
from temper.policy.errors import InputError
from temper.policy.tiers import Tier

SOURCE = "/var/lib/temper/assignments.json"
KEY_CHARACTERS = set("abcdefghijklmnopqrstuvwxyz0123456789-.")

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _dns_labels(max_size: int) -> st.SearchStrategy[str]:
    """Lowercase letters, digits and '-', starting and ending with a letter or digit."""
    ends = st.sampled_from(_ALNUM)
    inner = st.builds("{}{}{}".format, ends, st.text(_ALNUM + "-", max_size=max_size - 2), ends)
    return ends | inner


namespaces = _dns_labels(63)
names = st.lists(_dns_labels(20), min_size=1, max_size=4).map(".".join)
pod_keys = st.builds(PodKey, namespaces, names)
tiers = st.sampled_from(Tier)
# Anything json.loads can give: the document a damaged or hostile file may hold.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


def document(entries: object) -> dict[str, object]:
    return {"version": 1, "assignments": entries}


def refusal(data: object) -> str:
    with pytest.raises(InputError) as caught:
        parse_assignments(data, SOURCE)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: ")
    return message


# -- pod keys ------------------------------------------------------------------------------------


def test_a_pod_key_prints_as_namespace_slash_name() -> None:
    assert str(PodKey("shop", "checkout-0")) == "shop/checkout-0"
    assert sorted([PodKey("web", "a"), PodKey("shop", "z"), PodKey("shop", "b")]) == [
        PodKey("shop", "b"),
        PodKey("shop", "z"),
        PodKey("web", "a"),
    ]


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("shop", "checkout-0"),
        ("a", "0"),
        ("kube-system", "coredns-5d78c9869d-x7k2p"),
        ("web", "api.v1.example"),
        ("a" * 63, "b" * 253),
    ],
)
def test_valid_keys_have_no_problems(namespace: str, name: str) -> None:
    assert check_pod_key(namespace, name) == []
    assert pod_key(namespace, name) == PodKey(namespace, name)


def test_every_missing_field_is_named_required() -> None:
    assert check_pod_key("", "") == ["pod.namespace: required", "pod.name: required"]
    assert check_pod_key("shop", "", field="assignments[3]") == ["assignments[3].name: required"]


@pytest.mark.parametrize(
    "namespace", ["Shop", "shop_x", "-shop", "shop-", "a" * 64, "sh op", "a.b", "shop\n", "ş"]
)
def test_a_namespace_must_be_a_dns_label(namespace: str) -> None:
    (problem,) = check_pod_key(namespace, "checkout-0")
    assert problem.startswith(f"pod.namespace: {namespace!r} is not a DNS label")
    assert "at most 63 characters" in problem


@pytest.mark.parametrize(
    "name",
    ["Checkout", "a..b", ".a", "a.", "-a", "a-", "a b", "a/b", "a\x00", "checkout-0\n", "é"],
)
def test_a_pod_name_must_be_a_dns_subdomain(name: str) -> None:
    (problem,) = check_pod_key("shop", name)
    assert problem.startswith(f"pod.name: {name!r} is not a DNS subdomain")
    assert "at most 253 characters" in problem


def test_a_pod_name_longer_than_253_characters_is_refused() -> None:
    (problem,) = check_pod_key("shop", "b" * 254)
    assert problem.startswith("pod.name: ")


def test_every_problem_is_reported_together() -> None:
    problems = check_pod_key("Shop", "a..b", field="request.pod")
    assert [p.split(":")[0] for p in problems] == ["request.pod.namespace", "request.pod.name"]
    with pytest.raises(InputError) as caught:
        pod_key("Shop", "a..b")
    assert str(caught.value) == "; ".join(check_pod_key("Shop", "a..b"))


def test_long_names_are_cut_in_messages() -> None:
    namespace, name = "N" * 1000, "X" * 1000
    problems = check_pod_key(namespace, name)
    assert [len(p) < 200 for p in problems] == [True, True]
    assert repr("N" * 80) in problems[0]
    assert repr("X" * 80) in problems[1]
    with pytest.raises(InputError) as caught:
        parse_pod_key("Y" * 1000)
    assert repr("Y" * 80) in str(caught.value)
    assert len(str(caught.value)) < 200


def test_parse_pod_key_reads_namespace_slash_name() -> None:
    assert parse_pod_key("shop/checkout-0") == PodKey("shop", "checkout-0")
    assert parse_pod_key("web/api.v1") == PodKey("web", "api.v1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("checkout-0", "pod 'checkout-0': give it as NAMESPACE/NAME"),
        ("", "pod '': give it as NAMESPACE/NAME"),
        ("/checkout-0", "pod.namespace: required"),
        ("shop/", "pod.name: required"),
        ("/", "pod.namespace: required; pod.name: required"),
        ("shop/a/b", "pod.name: 'a/b' is not a DNS subdomain"),
        ("shop/../etc", "pod.name: '../etc' is not a DNS subdomain"),
        ("shop /a", "pod.namespace: 'shop ' is not a DNS label"),
    ],
)
def test_parse_pod_key_names_the_fault(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_pod_key(text)
    assert str(caught.value).startswith(message)


@given(st.text() | st.tuples(st.text(), st.text()).map("/".join))
def test_hostile_text_is_refused_with_input_error_or_gives_a_clean_key(text: str) -> None:
    key = None
    with contextlib.suppress(InputError):
        key = parse_pod_key(text)
    if key is not None:
        for part in (key.namespace, key.name):
            assert part
            assert "/" not in part
            assert ".." not in part
            assert not any(c.isspace() or not c.isprintable() for c in part)
            assert set(part) <= KEY_CHARACTERS
        assert str(key) == text


# -- the assignments document -------------------------------------------------------------------


def test_parses_the_versioned_document() -> None:
    data = document({"shop/checkout-0": "critical", "batch/report": "background"})
    assert parse_assignments(data, SOURCE) == {
        PodKey("shop", "checkout-0"): Tier.CRITICAL,
        PodKey("batch", "report"): Tier.BACKGROUND,
    }
    assert parse_assignments(document({}), SOURCE) == {}


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "assignments",
        {},
        {"assignments": {}},
        {"version": 2, "assignments": {}},
        {"version": "1", "assignments": {}},
        {"version": 0, "assignments": {}},
        {"version": True, "assignments": {}},  # equal to 1 in Python, not a version
        {"version": 1.0, "assignments": {}},
    ],
)
def test_anything_but_a_version_1_document_is_refused(data: object) -> None:
    assert refusal(data) == f"{SOURCE}: not a version 1 assignments document"


@pytest.mark.parametrize("entries", [None, [], ["shop/a"], "shop/a=high", 1])
def test_the_assignments_must_be_an_object(entries: object) -> None:
    assert refusal(document(entries)) == f"{SOURCE}: 'assignments' must be an object"


def test_at_most_max_assignments_are_accepted() -> None:
    entries = {f"ns/pod-{i}": "low" for i in range(MAX_ASSIGNMENTS)}
    assert len(parse_assignments(document(entries), SOURCE)) == MAX_ASSIGNMENTS
    entries["ns/one-more"] = "low"
    message = refusal(document(entries))
    assert message == f"{SOURCE}: {MAX_ASSIGNMENTS + 1} assignments, at most {MAX_ASSIGNMENTS}"


@pytest.mark.parametrize(
    ("key", "tier", "fault"),
    [
        ("Shop/a", "high", "pod.namespace: 'Shop' is not a DNS label"),
        ("shop", "high", "give it as NAMESPACE/NAME"),
        ("shop/a b", "high", "pod.name: 'a b' is not a DNS subdomain"),
        ("shop/a", "urgent", "unknown tier 'urgent'"),
        ("shop/a", "HIGH", "unknown tier 'HIGH'"),
        ("shop/a", None, "unknown tier 'None'"),
        ("shop/a", 1, "unknown tier '1'"),
        ("shop/a", ["high"], "unknown tier"),
    ],
)
def test_a_bad_entry_is_named(key: str, tier: object, fault: str) -> None:
    data = document({"shop/fine": "low", key: tier})
    message = refusal(data)
    assert message.startswith(f"{SOURCE}: assignment {key!r}: ")
    assert fault in message


def test_a_long_bad_entry_is_cut_in_the_message() -> None:
    key = "shop/" + "Z" * 1000
    message = refusal(document({key: "low"}))
    assert f"assignment {key[:80]!r}: " in message
    assert len(message) < 400


@given(st.dictionaries(st.text(), json_values, max_size=5) | json_values)
def test_any_json_entries_give_valid_assignments_or_input_error(entries: object) -> None:
    for data in (entries, document(entries)):
        try:
            parsed = parse_assignments(data, SOURCE)
        except InputError:
            continue
        for key, tier in parsed.items():
            assert check_pod_key(key.namespace, key.name) == []
            assert isinstance(tier, Tier)


def test_render_gives_the_sorted_versioned_document() -> None:
    assignments = {
        PodKey("web", "api"): Tier.HIGH,
        PodKey("batch", "report"): Tier.BACKGROUND,
        PodKey("shop", "checkout-0"): Tier.CRITICAL,
    }
    rendered = render_assignments(assignments)
    assert rendered == {
        "version": 1,
        "assignments": {
            "batch/report": "background",
            "shop/checkout-0": "critical",
            "web/api": "high",
        },
    }
    entries = rendered["assignments"]
    assert isinstance(entries, dict)
    assert list(entries) == ["batch/report", "shop/checkout-0", "web/api"]
    assert render_assignments({}) == {"version": 1, "assignments": {}}


@given(st.dictionaries(pod_keys, tiers, max_size=20))
def test_render_then_parse_gives_the_same_assignments(assignments: dict[PodKey, Tier]) -> None:
    rendered = render_assignments(assignments)
    through_json = json.loads(json.dumps(rendered))
    assert parse_assignments(through_json, SOURCE) == assignments
    reordered = dict(reversed(list(assignments.items())))
    assert json.dumps(render_assignments(reordered)) == json.dumps(rendered)


def test_planner_assignments_are_keyed_by_namespace_slash_name() -> None:
    assignments = {PodKey("shop", "checkout-0"): Tier.CRITICAL, PodKey("web", "a.b"): Tier.LOW}
    assert planner_assignments(assignments) == {
        "shop/checkout-0": Tier.CRITICAL,
        "web/a.b": Tier.LOW,
    }
