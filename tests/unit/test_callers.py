"""Who may call the agent's API (`AllowList`) and how a caller is described and audited."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.host.peercred import PeerCredentials
from temper.serve.callers import AllowList, Caller

TEMPER_GID = 990
TEMPER = AllowList("temper", TEMPER_GID)


def local(uid: int, gid: int = 1000, groups: tuple[int, ...] = (), name: str = "alice") -> Caller:
    return Caller("unix", name, PeerCredentials(pid=4242, uid=uid, gid=gid, groups=groups))


TLS = Caller("tls", "CN=ops-laptop,O=example")

# -- who may call --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "allow", [AllowList(), AllowList("temper", None), TEMPER], ids=["none", "missing", "temper"]
)
def test_root_may_always_call(allow: AllowList) -> None:
    assert allow.refusal(local(0, gid=0, name="root")) is None


def test_a_member_by_primary_group_may_call() -> None:
    assert TEMPER.refusal(local(1000, gid=TEMPER_GID)) is None


def test_a_member_by_supplementary_group_may_call() -> None:
    assert TEMPER.refusal(local(1000, gid=1000, groups=(4, 27, TEMPER_GID))) is None


def test_anyone_else_is_refused_with_who_they_are_and_who_may() -> None:
    message = TEMPER.refusal(local(1000, gid=1000, groups=(4, 27)))
    assert message == (
        "uid 1000 (alice) pid 4242 may not use the agent's API: "
        "allowed are root and members of group temper (gid 990)"
    )


def test_a_numeric_group_is_described_as_configured() -> None:
    allow = AllowList("990", TEMPER_GID)
    assert allow.describe() == "root and members of group 990 (gid 990)"
    assert allow.refusal(local(1000, groups=(TEMPER_GID,))) is None


def test_without_a_group_only_root_may_call() -> None:
    allow = AllowList()
    assert allow.describe() == "root only"
    message = allow.refusal(local(1000, gid=TEMPER_GID, groups=(TEMPER_GID,)))
    assert message is not None
    assert message.endswith("allowed are root only")


def test_a_configured_group_missing_on_the_host_lets_only_root_call() -> None:
    allow = AllowList("temper", None)
    assert allow.describe() == "root only (group 'temper' does not exist on this host)"
    message = allow.refusal(local(1000, gid=TEMPER_GID, groups=(TEMPER_GID,)))
    assert message is not None
    assert "uid 1000 (alice)" in message
    assert "group 'temper' does not exist on this host" in message


@pytest.mark.parametrize("allow", [AllowList(), AllowList("temper", None), TEMPER])
def test_tls_callers_are_vouched_for_by_the_ca(allow: AllowList) -> None:
    assert allow.refusal(TLS) is None


def test_a_uid_without_a_name_is_described_by_number() -> None:
    message = TEMPER.refusal(local(4_000_000, name="4000000"))
    assert message is not None
    assert message.startswith("uid 4000000 (4000000) pid 4242 may not use")


ids = st.integers(0, 2**32 - 2)


@given(ids, ids, st.lists(ids, max_size=5), st.none() | ids)
def test_a_local_caller_may_call_exactly_when_root_or_in_the_group(
    uid: int, gid: int, groups: list[int], allowed_gid: int | None
) -> None:
    caller = local(uid, gid, tuple(groups))
    allow = AllowList(None if allowed_gid is None else "g", allowed_gid)
    admitted = uid == 0 or (allowed_gid is not None and allowed_gid in (gid, *groups))
    assert (allow.refusal(caller) is None) == admitted


# -- credentials and records ---------------------------------------------------------------------


def test_in_group_counts_the_primary_and_supplementary_groups() -> None:
    creds = PeerCredentials(pid=1, uid=1000, gid=1000, groups=(4, 27))
    assert [creds.in_group(g) for g in (1000, 4, 27, 990, 0)] == [True, True, True, False, False]


def test_a_local_caller_is_described_and_recorded_by_its_credentials() -> None:
    caller = local(1000, gid=1001, groups=(4, 27))
    assert caller.describe() == "uid 1000 (alice) pid 4242"
    assert caller.record() == {
        "via": "unix",
        "uid": 1000,
        "user": "alice",
        "gid": 1001,
        "pid": 4242,
    }


def test_a_tls_caller_is_described_and_recorded_by_its_subject() -> None:
    assert TLS.describe() == "TLS client 'CN=ops-laptop,O=example'"
    assert TLS.record() == {"via": "tls", "subject": "CN=ops-laptop,O=example"}
