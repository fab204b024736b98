"""Kubelet's pod cgroup layout for both drivers, and the CgroupRegex that matches pods."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.policy.cgroups import (
    CGROUP_FS_ROOT,
    CgroupDriver,
    any_path_regex,
    container_cgroup_path,
    pod_cgroup_path,
    qos_prefix,
    regex_subject,
)
from temper.policy.tiers import QosClass

UID = "1c2d3e4f-aaaa-4bbb-8ccc-0123456789ab"
UID_ = UID.replace("-", "_")
G, B, BE = QosClass.GUARANTEED, QosClass.BURSTABLE, QosClass.BEST_EFFORT
SYSTEMD, CGROUPFS = CgroupDriver.SYSTEMD, CgroupDriver.CGROUPFS

uids = st.uuids().map(str)
qos_classes = st.sampled_from(QosClass)
drivers = st.sampled_from(CgroupDriver)
container_ids = st.text("0123456789abcdef", min_size=12, max_size=64)


@pytest.mark.parametrize(
    ("qos", "driver", "path"),
    [
        (G, SYSTEMD, f"kubepods.slice/kubepods-pod{UID_}.slice/"),
        (
            B,
            SYSTEMD,
            f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/",
        ),
        (
            BE,
            SYSTEMD,
            f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/",
        ),
        (G, CGROUPFS, f"kubepods/pod{UID}/"),
        (B, CGROUPFS, f"kubepods/burstable/pod{UID}/"),
        (BE, CGROUPFS, f"kubepods/besteffort/pod{UID}/"),
    ],
)
def test_pod_cgroup_path(qos: QosClass, driver: CgroupDriver, path: str) -> None:
    assert pod_cgroup_path(qos, UID, driver) == path


@pytest.mark.parametrize(
    ("driver", "path"),
    [
        (SYSTEMD, f"kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-abc123.scope/"),
        (CGROUPFS, f"kubepods/pod{UID}/abc123/"),
    ],
)
def test_container_cgroup_path(driver: CgroupDriver, path: str) -> None:
    pod_path = pod_cgroup_path(G, UID, driver)
    assert container_cgroup_path(pod_path, "abc123", driver) == path


def test_systemd_driver_writes_no_dashes_from_the_uid() -> None:
    path = pod_cgroup_path(B, UID, SYSTEMD)
    assert UID not in path
    assert UID_ in path


@given(uids, qos_classes, drivers)
def test_pod_path_starts_with_its_own_qos_prefix_only(
    uid: str, qos: QosClass, driver: CgroupDriver
) -> None:
    path = pod_cgroup_path(qos, uid, driver)
    assert path.startswith(qos_prefix(qos, driver))
    for other in QosClass:
        if other is not qos:
            assert not path.startswith(qos_prefix(other, driver))
    assert not path.startswith("/")
    assert path.endswith("/")


@given(uids, qos_classes, drivers, container_ids)
def test_container_path_is_below_its_pod_path(
    uid: str, qos: QosClass, driver: CgroupDriver, container_id: str
) -> None:
    pod_path = pod_cgroup_path(qos, uid, driver)
    path = container_cgroup_path(pod_path, container_id, driver)
    assert path.startswith(pod_path)
    assert path != pod_path
    assert path.endswith("/")
    assert path.count("/") == pod_path.count("/") + 1


@pytest.mark.parametrize(
    ("path", "subject"),
    [
        ("kubepods/pod1/", f"{CGROUP_FS_ROOT}/kubepods/pod1"),
        ("kubepods/pod1", f"{CGROUP_FS_ROOT}/kubepods/pod1"),
        ("kubepods.slice/", "/sys/fs/cgroup/kubepods.slice"),
    ],
)
def test_regex_subject_is_the_absolute_path_without_trailing_slash(path: str, subject: str) -> None:
    assert regex_subject(path) == subject


def _matches(pattern: str, path: str) -> bool:
    return re.search(pattern, regex_subject(path)) is not None


_PORTABLE = re.compile(r"\^(?:[A-Za-z0-9_/\-]|\\\.|\(\?:|\||\)|\$)*")


def test_any_path_regex_exact_text_in_sorted_path_order() -> None:
    paths = [pod_cgroup_path(B, UID, CGROUPFS), pod_cgroup_path(G, UID, SYSTEMD)]
    assert any_path_regex(paths) == (
        rf"^/sys/fs/cgroup/(?:kubepods\.slice/kubepods-pod{UID_}\.slice"
        rf"|kubepods/burstable/pod{UID})(?:/|$)"
    )


@given(
    st.lists(st.tuples(uids, qos_classes), min_size=1, max_size=6, unique_by=lambda t: t[0]),
    st.lists(st.tuples(uids, qos_classes), max_size=4),
    drivers,
    container_ids,
)
def test_any_path_regex_matches_listed_pods_and_their_containers_only(
    listed: list[tuple[str, QosClass]],
    others: list[tuple[str, QosClass]],
    driver: CgroupDriver,
    container_id: str,
) -> None:
    listed_uids = {uid for uid, _ in listed}
    paths = [pod_cgroup_path(qos, uid, driver) for uid, qos in listed]
    pattern = any_path_regex(paths)
    assert _PORTABLE.fullmatch(pattern), pattern
    for path in paths:
        assert _matches(pattern, path)
        assert _matches(pattern, container_cgroup_path(path, container_id, driver))
    for uid, qos in others:
        if uid in listed_uids:
            continue
        other = pod_cgroup_path(qos, uid, driver)
        assert not _matches(pattern, other)
        assert not _matches(pattern, container_cgroup_path(other, container_id, driver))


@given(uids, qos_classes, drivers, st.text("0123456789abcdef-", min_size=1, max_size=8))
def test_any_path_regex_rejects_a_uid_that_merely_shares_a_prefix(
    uid: str, qos: QosClass, driver: CgroupDriver, tail: str
) -> None:
    pattern = any_path_regex([pod_cgroup_path(qos, uid, driver)])
    longer = pod_cgroup_path(qos, uid + tail, driver)
    assert not _matches(pattern, longer)
    assert not _matches(pattern, container_cgroup_path(longer, "abc", driver))


@given(uids, drivers)
def test_any_path_regex_keeps_qos_classes_apart(uid: str, driver: CgroupDriver) -> None:
    pattern = any_path_regex([pod_cgroup_path(B, uid, driver)])
    assert not _matches(pattern, pod_cgroup_path(G, uid, driver))
    assert not _matches(pattern, pod_cgroup_path(BE, uid, driver))


@pytest.mark.parametrize(
    "path",
    [
        "kubepods/burstable/",
        "kubepods/",
        "",
        f"other/kubepods/burstable/pod{UID}/",
        f"kubepodsXburstable/pod{UID}/",
    ],
)
def test_any_path_regex_does_not_match_parents_or_lookalikes(path: str) -> None:
    pattern = any_path_regex([pod_cgroup_path(B, UID, CGROUPFS)])
    assert not _matches(pattern, path)


def test_dots_are_escaped_so_they_match_only_dots() -> None:
    pattern = any_path_regex([pod_cgroup_path(G, UID, SYSTEMD)])
    lookalike = f"kubepodsXslice/kubepods-pod{UID_}Xslice/"
    assert not _matches(pattern, lookalike)
    assert _matches(pattern, pod_cgroup_path(G, UID, SYSTEMD))


def test_any_path_regex_is_independent_of_path_order() -> None:
    paths = [pod_cgroup_path(q, str(uuid.UUID(int=i)), SYSTEMD) for i, q in enumerate(QosClass)]
    assert any_path_regex(paths) == any_path_regex(reversed(paths))


def test_any_path_regex_of_no_paths_matches_no_pod() -> None:
    pattern = any_path_regex([])
    assert not _matches(pattern, pod_cgroup_path(G, UID, SYSTEMD))
    assert not _matches(pattern, pod_cgroup_path(BE, UID, CGROUPFS))
