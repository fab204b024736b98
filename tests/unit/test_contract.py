"""The Node contract: the kill switch rule, the state and tier-load annotations, the apply body."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from builders import make_pod
from temper.policy.contract import (
    CONTRACT_MODES,
    SAFE_MODE_KEY,
    STATE_KEY,
    TIER_LOAD_KEY,
    AgentState,
    KillSwitch,
    TierLoad,
    contract_mode,
    kill_switch_value,
    node_apply_patch,
    tier_load,
    tier_load_json,
)
from temper.policy.lifecycle import Mode
from temper.policy.machine import synthetic_shape
from temper.policy.planner import plan_node
from temper.policy.tiers import QosClass, Tier

G, B, BE = QosClass.GUARANTEED, QosClass.BURSTABLE, QosClass.BEST_EFFORT
NODE16 = synthetic_shape(1, 8, 2, 1)
FULLWIDTH_FALSE = "\uff26\uff21\uff2c\uff33\uff25"  # looks like FALSE, is not
SHOWN_MAX = 40  # characters of an unrecognised value the note may quote
# The note's own words, and room for the quoted part's repr: at most 10 characters per character
# ("\U0010ffff") plus quotes and "...".
NOTE_MAX = 100 + 10 * SHOWN_MAX + 5


# -- kill_switch_value ---------------------------------------------------------------------------


def test_absent_or_false_is_off() -> None:
    for value in (None, "false", " FALSE ", "False\n", "\tfalse"):
        assert kill_switch_value(value) == KillSwitch(False), value


def test_true_is_on_without_a_note() -> None:
    for value in ("true", "True ", " TRUE", "tRuE\n"):
        switch = kill_switch_value(value)
        assert switch.on, value
        assert switch.note is None, value


def test_any_other_value_fails_closed_with_a_note() -> None:
    for value in ("yes please", "1", "0", "", "   ", "off", "no", "sí", FULLWIDTH_FALSE, "false!"):
        switch = kill_switch_value(value)
        assert switch.on, value
        assert switch.note is not None, value
        assert SAFE_MODE_KEY in switch.note
        assert repr(value) in switch.note
        assert 'treated as "true"' in switch.note


def test_the_note_quotes_at_most_forty_characters_of_a_huge_value() -> None:
    value = "x" * (1 << 20)
    switch = kill_switch_value(value)
    assert switch.on
    assert switch.note is not None
    assert "x" * SHOWN_MAX + "..." in switch.note
    assert "x" * (SHOWN_MAX + 1) not in switch.note
    assert len(switch.note) < 150


def test_the_note_of_a_long_unicode_value_is_bounded_too() -> None:
    value = "\U0001f525\u200b" * 5000  # emoji and zero-width spaces
    switch = kill_switch_value(value)
    assert switch.on
    assert switch.note is not None
    assert len(switch.note) <= NOTE_MAX
    assert "..." in switch.note


def _padded(word: str) -> st.SearchStrategy[str]:
    """`word` in any letter case, with blanks around it."""
    blanks = st.text(alphabet=" \t\n\r", max_size=3)
    cased = st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in word)).map("".join)
    return st.tuples(blanks, cased, blanks).map("".join)


@given(st.one_of(st.text(), _padded("false"), _padded("true"), st.text(min_size=41)))
def test_property_only_false_turns_the_switch_off(value: str) -> None:
    word = value.strip().lower()
    switch = kill_switch_value(value)
    assert switch.on == (word != "false")
    assert (switch.note is None) == (word in ("true", "false"))
    if switch.note is not None:
        assert len(switch.note) <= NOTE_MAX


# -- state ---------------------------------------------------------------------------------------


def test_every_lifecycle_mode_maps_to_a_contract_mode() -> None:
    mapped = {mode: contract_mode(mode) for mode in Mode}
    assert set(mapped.values()) <= set(CONTRACT_MODES)
    assert set(mapped.values()) == set(CONTRACT_MODES)  # and every contract mode is reachable
    assert mapped[Mode.FOREIGN] == "observing"
    assert mapped[Mode.STOCK] == "observing"
    assert mapped[Mode.SAFE_MODE] == "safe-mode"


def test_agent_state_json_has_exactly_the_contract_keys() -> None:
    state = AgentState(
        mode=Mode.FOREIGN,
        reason="lavd_1.0.3 is loaded",
        ops=None,
        enable_seq=7,
        config_sha256=None,
        agent_version="0.1.0",
        updated="2024-05-01T10:00:00Z",
    )
    document = json.loads(state.to_json())
    assert set(document) == {
        "mode",
        "reason",
        "ops",
        "enable_seq",
        "config_sha256",
        "agent_version",
        "updated",
    }
    assert document["mode"] == "observing"
    assert document["mode"] in CONTRACT_MODES
    assert (document["ops"], document["enable_seq"]) == (None, 7)
    assert document["reason"] == "lavd_1.0.3 is loaded"


def test_agent_state_json_is_stable_for_equal_states_and_shows_the_mode() -> None:
    state = AgentState(
        mode=Mode.ENFORCING,
        reason="loaded",
        ops="layered_1.1.2",
        enable_seq=3,
        config_sha256="ab" * 32,
        agent_version="0.1.0",
        updated="2024-05-01T10:00:00Z",
    )
    assert state.to_json() == replace(state).to_json()
    assert json.loads(state.to_json())["mode"] == "enforcing"
    parked = json.loads(replace(state, mode=Mode.PARKED).to_json())
    assert parked["mode"] == "parked"


# -- tier load -----------------------------------------------------------------------------------


def test_tier_load_sums_pods_requests_and_use_by_uid() -> None:
    critical = make_pod("checkout", B, request=2000, priority_class="temper-critical")
    guaranteed = make_pod("cart", G, request=1000, limit=1000)
    web = make_pod("web", B, request=100)
    api = make_pod("api", B, request=300)
    batch = make_pod("batch", BE, request=0)
    plan = plan_node([critical, guaranteed, web, api, batch], NODE16)
    used = {critical.uid: 1500, web.uid: 40, batch.uid: 250, "uid-of-a-gone-pod": 9999}

    load = tier_load(plan, used)

    assert load == {
        Tier.CRITICAL: TierLoad(pods=1, requested_millicpu=2000, used_millicpu=1500),
        Tier.HIGH: TierLoad(pods=1, requested_millicpu=1000, used_millicpu=0),
        Tier.NORMAL: TierLoad(pods=2, requested_millicpu=400, used_millicpu=40),
        Tier.LOW: TierLoad(),
        Tier.BACKGROUND: TierLoad(pods=1, requested_millicpu=0, used_millicpu=250),
    }


def test_tier_load_json_names_all_five_tiers_even_when_empty() -> None:
    plan = plan_node([make_pod("only", G, request=500, limit=500)], NODE16)
    document = json.loads(tier_load_json(tier_load(plan, {})))
    assert set(document) == {tier.value for tier in Tier}
    assert document["high"] == {"pods": 1, "requested_millicpu": 500, "used_millicpu": 0}
    for tier in ("critical", "normal", "low", "background"):
        assert document[tier] == {"pods": 0, "requested_millicpu": 0, "used_millicpu": 0}


def test_tier_load_of_a_node_without_pods_is_all_zero() -> None:
    document = json.loads(tier_load_json(tier_load(plan_node([], NODE16), {"x": 5})))
    assert len(document) == 5
    assert all(
        entry == {"pods": 0, "requested_millicpu": 0, "used_millicpu": 0}
        for entry in document.values()
    )


# -- apply body ----------------------------------------------------------------------------------


def test_node_apply_patch_carries_only_the_given_annotations() -> None:
    body = node_apply_patch("node-a", {STATE_KEY: '{"mode":"parked"}', TIER_LOAD_KEY: "{}"}.items())
    assert body == {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "node-a",
            "annotations": {STATE_KEY: '{"mode":"parked"}', TIER_LOAD_KEY: "{}"},
        },
    }
    assert SAFE_MODE_KEY not in body["metadata"]["annotations"]  # type: ignore[index]


def test_node_apply_patch_with_one_annotation_names_no_other() -> None:
    body = node_apply_patch("node-b", [(STATE_KEY, "s")])
    metadata = body["metadata"]
    assert metadata == {"name": "node-b", "annotations": {STATE_KEY: "s"}}
