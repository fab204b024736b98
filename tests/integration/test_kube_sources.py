"""The cluster sources and sink against a scripted API: pod watch, Node watch, publisher.

`FakeKube` (`temper_testing.kube.fakeapi`) stands in for the API server: each list, read and watch
answers from a script the test writes, and records what it was asked. Backoff keeps its
arithmetic but sleeps milliseconds (`recorder`).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest

import temper.kube.nodewatch
import temper.kube.podwatch
import temper.kube.publish
from temper.kube.api import Backoff, KubeError
from temper.kube.nodewatch import KILL_SWITCH_FILE, KillSwitchFile, WatchedNode, watch_node
from temper.kube.podwatch import PodWatchSettings, watch_node_pods
from temper.kube.publish import EVENT_NAMESPACE, NodePublisher
from temper.policy.contract import (
    FIELD_MANAGER,
    OFF,
    SAFE_MODE_KEY,
    STATE_KEY,
    TIER_LOAD_KEY,
    KillSwitch,
    kill_switch_value,
    node_apply_patch,
)
from temper.policy.pods import PodSnapshot
from temper_testing.kube.fakeapi import END, FakeKube
from waiting import until

PodMaker = Callable[..., dict[str, Any]]
T = TypeVar("T")

WAIT_S = 5.0  # the longest any step may take before a test fails instead of hanging
NODE = "node-a"
NOW = PodWatchSettings(confirm_empty_s=0)


class Recorder:
    """What the code under test reported: KubeErrors to on_error, waits asked of Backoff."""

    def __init__(self) -> None:
        self.errors: list[KubeError] = []
        self.waits: list[float | None] = []  # each Backoff.wait's retry_after_s

    def on_error(self, error: KubeError) -> None:
        self.errors.append(error)

    @property
    def statuses(self) -> list[int]:
        return [error.status for error in self.errors]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Backoff in the three modules sleeps at most 5 ms, and records what it was asked."""
    recorder = Recorder()

    class FastBackoff(Backoff):
        def __init__(self) -> None:
            super().__init__(first_s=0.001, max_s=0.005)

        async def wait(self, retry_after_s: float | None = None) -> float:
            recorder.waits.append(retry_after_s)
            return await super().wait(retry_after_s)

    for module in (temper.kube.podwatch, temper.kube.nodewatch, temper.kube.publish):
        monkeypatch.setattr(module, "Backoff", FastBackoff)
    return recorder


def run(scenario: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario, WAIT_S * 4)

    return asyncio.run(bounded())


async def take(source: AsyncIterator[T], count: int) -> list[T]:
    """The next `count` items, each within the deadline."""
    return [await asyncio.wait_for(anext(source), WAIT_S) for _ in range(count)]


async def nothing_more(source: AsyncIterator[Any], wait_s: float = 0.1) -> bool:
    """True when `source` yields nothing within `wait_s` (it is cancelled, so close it after)."""
    try:
        await asyncio.wait_for(anext(source), wait_s)
    except TimeoutError:
        return True
    return False


# -- pod objects ---------------------------------------------------------------------------------


def pod_list(version: str, *pods: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PodList", "metadata": {"resourceVersion": version}, "items": list(pods)}


def at(version: str, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as of resourceVersion `version`."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["resourceVersion"] = version
    return obj


def event(kind: str, version: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": at(version, obj)}


def bookmark(version: str, kind: str = "Pod") -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": kind, "metadata": {"resourceVersion": version}}}


def keys(snapshot: PodSnapshot) -> list[str]:
    return [pod.key for pod in snapshot.pods]


async def pod_snapshots(api: FakeKube, recorder: Recorder, count: int, **kwargs: Any) -> list[Any]:
    async with aclosing(
        watch_node_pods(api, NODE, on_error=recorder.on_error, **kwargs)
    ) as snapshots:
        return await take(snapshots, count)


# -- watch_node_pods -----------------------------------------------------------------------------


def test_list_then_events_change_the_snapshot_and_bookmarks_move_the_version(
    pod_manifest: PodMaker, recorder: Recorder
) -> None:
    api_pod, db, cache, extra = (pod_manifest(n, "shop") for n in ("api", "db", "cache", "extra"))
    bigger = pod_manifest("api", "shop", cpu_request="2")
    api = FakeKube(
        NODE,
        lists=[pod_list("10", at("9", api_pod), at("8", db))],
        pod_watches=[
            [
                event("ADDED", "11", cache),
                event("MODIFIED", "12", bigger),
                event("DELETED", "13", db),
                bookmark("20"),
                END,
            ],
            [event("ADDED", "21", extra)],
        ],
    )
    seen = run(pod_snapshots(api, recorder, 5))
    assert [keys(s) for s in seen] == [
        ["shop/api", "shop/db"],
        ["shop/api", "shop/cache", "shop/db"],
        ["shop/api", "shop/cache", "shop/db"],
        ["shop/api", "shop/cache"],
        ["shop/api", "shop/cache", "shop/extra"],  # after the bookmark: nothing in between
    ]
    assert seen[1].pods[0].cpu_request_millis == 0
    assert seen[2].pods[0].cpu_request_millis == 2000
    assert len({s.fingerprint for s in seen}) == 5
    assert api.pod_watch_versions == ["10", "20"]  # the second watch resumes at the bookmark
    assert api.list_calls == 1
    assert (recorder.errors, recorder.waits) == ([], [])


def test_a_watch_that_ends_resumes_from_the_last_event(
    pod_manifest: PodMaker, recorder: Recorder
) -> None:
    api = FakeKube(
        NODE,
        lists=[pod_list("5")],
        pod_watches=[[event("ADDED", "6", pod_manifest("a")), END], [END], []],
    )

    async def scenario() -> list[PodSnapshot]:
        async with aclosing(watch_node_pods(api, NODE)) as snapshots:
            seen = await take(snapshots, 2)
            assert await nothing_more(snapshots)
            return seen

    seen = run(scenario())
    assert [keys(s) for s in seen] == [[], ["default/a"]]
    assert api.pod_watch_versions == ["5", "6", "6"]
    assert api.list_calls == 1


def test_410_gone_lists_again_at_once_and_the_new_list_replaces_the_state(
    pod_manifest: PodMaker, recorder: Recorder
) -> None:
    a, b, c, d = (pod_manifest(n) for n in "abcd")
    api = FakeKube(
        NODE,
        lists=[pod_list("10", a, b), pod_list("30", a, d)],
        pod_watches=[
            [event("ADDED", "11", c), KubeError(410, "too old resource version")],
            [event("DELETED", "31", a)],
        ],
    )
    seen = run(pod_snapshots(api, recorder, 4))
    assert [keys(s) for s in seen] == [
        ["default/a", "default/b"],
        ["default/a", "default/b", "default/c"],
        ["default/a", "default/d"],  # b and c were deleted while away: gone now
        ["default/d"],
    ]
    assert recorder.statuses == [410]
    assert recorder.waits == []  # no backoff: the watch cannot resume, so list now
    assert api.list_calls == 2
    assert api.pod_watch_versions == ["10", "30"]


def test_a_failed_list_yields_nothing_and_is_retried_after_a_backoff(
    pod_manifest: PodMaker, recorder: Recorder
) -> None:
    a, b = pod_manifest("a"), pod_manifest("b")
    api = FakeKube(
        NODE,
        lists=[
            pod_list("10", a),
            KubeError(500, "etcd is down"),
            KubeError(0, "connection refused"),
            pod_list("40", a, b),
        ],
        pod_watches=[[KubeError(410, "gone")]],
    )
    seen = run(pod_snapshots(api, recorder, 2))
    assert [keys(s) for s in seen] == [["default/a"], ["default/a", "default/b"]]
    assert recorder.statuses == [410, 500, 0]
    assert recorder.waits == [None, None]
    assert api.list_calls == 4


def test_a_failed_first_list_yields_no_empty_snapshot(
    pod_manifest: PodMaker, recorder: Recorder
) -> None:
    api = FakeKube(NODE, lists=[KubeError(503, "starting"), pod_list("1", pod_manifest("a"))])
    (first,) = run(pod_snapshots(api, recorder, 1))
    assert keys(first) == ["default/a"]
    assert recorder.statuses == [503]


def test_a_watch_failure_resumes_the_watch_without_listing(
    pod_manifest: PodMaker, recorder: Recorder
) -> None:
    api = FakeKube(
        NODE,
        lists=[pod_list("10")],
        pod_watches=[
            [event("ADDED", "12", pod_manifest("a")), KubeError(0, "reset by peer")],
            [event("ADDED", "13", pod_manifest("b"))],
        ],
    )
    seen = run(pod_snapshots(api, recorder, 3))
    assert [keys(s) for s in seen][-1] == ["default/a", "default/b"]
    assert api.pod_watch_versions == ["10", "12"]
    assert (api.list_calls, recorder.statuses, recorder.waits) == (1, [0], [None])


def test_429_backs_off_at_least_the_retry_after(recorder: Recorder) -> None:
    api = FakeKube(
        NODE,
        lists=[KubeError(429, "too many requests", retry_after_s=2), pod_list("1")],
    )
    run(pod_snapshots(api, recorder, 1))
    assert recorder.statuses == [429]
    assert recorder.waits == [2]


def test_an_empty_list_after_pods_is_confirmed_before_it_is_believed(
    pod_manifest: PodMaker, recorder: Recorder
) -> None:
    a, b = pod_manifest("a"), pod_manifest("b")
    api = FakeKube(
        NODE,
        lists=[pod_list("10", a, b), pod_list("20"), pod_list("21", a)],
        pod_watches=[[KubeError(410, "gone")]],
    )
    seen = run(pod_snapshots(api, recorder, 2, settings=NOW))
    assert [keys(s) for s in seen] == [["default/a", "default/b"], ["default/a"]]
    assert api.list_calls == 3
    assert api.pod_watch_versions == ["10"]


def test_an_empty_list_confirmed_twice_is_believed(
    pod_manifest: PodMaker, recorder: Recorder
) -> None:
    api = FakeKube(
        NODE,
        lists=[pod_list("10", pod_manifest("a")), pod_list("20"), pod_list("22")],
        pod_watches=[[KubeError(410, "gone")], []],
    )
    seen = run(pod_snapshots(api, recorder, 2, settings=NOW))
    assert [keys(s) for s in seen] == [["default/a"], []]
    assert api.list_calls == 3


def test_an_empty_first_list_is_believed_at_once(recorder: Recorder) -> None:
    api = FakeKube(NODE, lists=[pod_list("3")])
    (first,) = run(pod_snapshots(api, recorder, 1, settings=NOW))
    assert (first.pods, first.errors) == ((), ())
    assert api.list_calls == 1


def test_a_rejected_pod_is_an_error_and_the_others_still_count(
    pod_manifest: PodMaker, recorder: Recorder
) -> None:
    broken = pod_manifest("broken")
    del broken["metadata"]["uid"]
    fixed = pod_manifest("broken")
    api = FakeKube(
        NODE,
        lists=[pod_list("10", pod_manifest("a"), broken, pod_manifest("c"))],
        pod_watches=[[event("MODIFIED", "11", fixed), event("DELETED", "12", fixed)]],
    )
    first, repaired, deleted = run(pod_snapshots(api, recorder, 3))
    assert keys(first) == ["default/a", "default/c"]
    (error,) = first.errors
    assert "default/broken" in error
    assert "metadata.uid" in error
    assert (keys(repaired), repaired.errors) == (["default/a", "default/broken", "default/c"], ())
    assert (keys(deleted), deleted.errors) == (["default/a", "default/c"], ())


# -- Backoff -------------------------------------------------------------------------------------


def test_backoff_delays_grow_and_are_capped() -> None:
    backoff = Backoff(first_s=1.0, max_s=8.0)
    delays = [backoff.delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_backoff_takes_retry_after_as_a_floor_capped_at_max() -> None:
    assert Backoff(first_s=0.5, max_s=30.0).delay(2) >= 2
    assert Backoff(first_s=0.5, max_s=30.0).delay(0) <= 0.5  # a floor, never a raise
    assert Backoff(first_s=0.5, max_s=5.0).delay(3600) == 5.0


def test_backoff_reset_starts_again_from_the_first_delay() -> None:
    backoff = Backoff(first_s=1.0, max_s=64.0)
    for _ in range(6):
        backoff.delay()
    assert backoff.delay() >= 32
    backoff.reset()
    assert backoff.delay() <= 1.0


# -- watch_node ----------------------------------------------------------------------------------


def node(version: str, safe_mode: str | None = None, **labels: str) -> dict[str, Any]:
    annotations = {"other.io/owner": "ops"}
    if safe_mode is not None:
        annotations[SAFE_MODE_KEY] = safe_mode
    return {
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "uid": "node-uid-1",
            "resourceVersion": version,
            "annotations": annotations,
            "labels": labels,
        },
    }


def modified(obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": "MODIFIED", "object": obj}


async def node_views(api: FakeKube, recorder: Recorder, count: int) -> list[WatchedNode]:
    async with aclosing(watch_node(api, NODE, on_error=recorder.on_error)) as views:
        seen = await take(views, count)
        assert await nothing_more(views)
        return seen


def test_node_views_follow_the_kill_switch(recorder: Recorder) -> None:
    api = FakeKube(
        NODE,
        reads=[node("5", "true")],
        node_watches=[
            [
                modified(node("6")),  # cleared
                modified(node("7", role="db")),  # another change, same switch: no view
                bookmark("8", "Node"),
                modified(node("9", "maybe")),
            ]
        ],
    )
    first, cleared, garbage = run(node_views(api, recorder, 3))
    assert first == WatchedNode(KillSwitch(True), "true", "node-uid-1")
    assert cleared == WatchedNode(OFF, None, "node-uid-1")
    assert garbage.kill_switch.on
    assert garbage.kill_switch.note is not None
    assert garbage.raw == "maybe"
    assert api.node_watch_versions == ["5"]
    assert api.read_calls == 1


def test_an_api_error_reads_the_node_again(recorder: Recorder) -> None:
    api = FakeKube(
        NODE,
        reads=[node("5"), KubeError(500, "internal"), node("9"), node("12", "TRUE")],
        node_watches=[
            [modified(node("6", role="a")), KubeError(0, "reset")],
            [modified(node("10", role="b")), END],
            [KubeError(410, "gone")],
        ],
    )
    first, on = run(node_views(api, recorder, 2))
    assert (first.kill_switch, on.kill_switch) == (OFF, KillSwitch(True))
    assert api.read_calls == 4
    assert api.node_watch_versions == ["5", "9", "10", "12"]
    assert recorder.statuses == [0, 500]  # 410 is routine: not reported, not backed off
    assert recorder.waits == [None, None]


# -- KillSwitchFile ------------------------------------------------------------------------------


def test_kill_switch_file_round_trip(tmp_path: Path) -> None:
    remembered = KillSwitchFile(tmp_path / "state")
    for raw in ("true", None, "false", "bogus"):
        remembered.write(raw)
        assert remembered.read() == kill_switch_value(raw)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [KILL_SWITCH_FILE]


def test_kill_switch_file_missing_is_unknown(tmp_path: Path) -> None:
    assert KillSwitchFile(tmp_path).read() is None
    assert KillSwitchFile(tmp_path / "no" / "such" / "dir").read() is None


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"[1, 2]",
        b'"true"',
        b'{"seen": "2024-05-01T10:00:00Z"}',
        b'{"value": 1}',
        b"\xff\xfe\x00garbage",
    ],
)
def test_kill_switch_file_unreadable_is_unknown(tmp_path: Path, content: bytes) -> None:
    (tmp_path / KILL_SWITCH_FILE).write_bytes(content)
    assert KillSwitchFile(tmp_path).read() is None


def test_kill_switch_file_that_is_a_directory_is_unknown(tmp_path: Path) -> None:
    (tmp_path / KILL_SWITCH_FILE).mkdir()
    assert KillSwitchFile(tmp_path).read() is None


# -- NodePublisher -------------------------------------------------------------------------------

STATE = {STATE_KEY: json.dumps({"mode": "enforcing"})}
LOAD = {STATE_KEY: json.dumps({"mode": "enforcing"}), TIER_LOAD_KEY: "{}"}


def reasons(api: FakeKube) -> list[str]:
    return [body["reason"] for _, body in api.events]


def test_publish_then_flush_applies_once() -> None:
    api = FakeKube(NODE)
    publisher = NodePublisher(api, NODE)
    publisher.publish(STATE)
    run(publisher.flush())
    assert api.applies == [(NODE, node_apply_patch(NODE, STATE.items()), FIELD_MANAGER)]
    assert publisher.settled
    publisher.publish(dict(STATE))  # equal values: nothing to send
    run(publisher.flush())
    assert len(api.applies) == 1
    publisher.publish(LOAD)
    run(publisher.flush())
    assert [body["metadata"]["annotations"] for _, body, _ in api.applies] == [STATE, LOAD]


def test_events_are_posted_in_order_after_the_annotations() -> None:
    api = FakeKube(NODE)
    publisher = NodePublisher(api, NODE)
    publisher.node_uid = "node-uid-1"
    publisher.event("TemperEnforcing", "loaded")
    publisher.event("TemperSafeMode", "x" * 5000, warning=True)
    publisher.publish(STATE)
    api.apply_failures.append(KubeError(503, "unavailable"))
    with pytest.raises(KubeError):
        run(publisher.flush())
    assert api.events == []  # nothing posted before the annotations are in
    run(publisher.flush())
    assert len(api.applies) == 1
    assert reasons(api) == ["TemperEnforcing", "TemperSafeMode"]
    (namespace, first), (_, second) = api.events
    assert namespace == EVENT_NAMESPACE
    assert first["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": NODE,
        "uid": "node-uid-1",
    }
    assert (first["type"], second["type"]) == ("Normal", "Warning")
    assert len(second["message"]) == 1024
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert publisher.settled


def test_a_failed_event_stays_queued_until_a_later_flush() -> None:
    api = FakeKube(NODE)
    publisher = NodePublisher(api, NODE)
    for reason in ("One", "Two", "Three"):
        publisher.event(reason, "m")
    api.event_failures.append(KubeError(0, "timed out"))
    with pytest.raises(KubeError, match="timed out"):
        run(publisher.flush())
    assert api.events == []
    run(publisher.flush())
    assert reasons(api) == ["One", "Two", "Three"]
    run(publisher.flush())
    assert reasons(api) == ["One", "Two", "Three"]  # posted once each


def test_a_409_on_an_event_counts_as_posted() -> None:
    api = FakeKube(NODE)
    publisher = NodePublisher(api, NODE)
    publisher.event("One", "m")
    publisher.event("Two", "m")
    api.event_failures.append(KubeError(409, "already exists"))
    run(publisher.flush())
    assert reasons(api) == ["Two"]  # One was posted before; its answer was lost
    run(publisher.flush())
    assert reasons(api) == ["Two"]  # and is not posted again


def test_past_max_events_the_oldest_are_dropped_and_counted() -> None:
    api = FakeKube(NODE)
    publisher = NodePublisher(api, NODE, max_events=3)
    for index in range(5):
        publisher.event(f"E{index}", "m")
    assert publisher.dropped_events == 2
    run(publisher.flush())
    assert reasons(api) == ["E2", "E3", "E4"]
    publisher.event("E5", "m")
    assert publisher.dropped_events == 2  # room again after the flush


def test_run_retries_with_the_newest_annotations(recorder: Recorder) -> None:
    api = FakeKube(NODE)
    api.apply_failures.extend([KubeError(429, "slow down", retry_after_s=1), KubeError(500, "x")])

    def on_error(error: KubeError) -> None:
        recorder.on_error(error)
        publisher.publish(LOAD)  # asked for while the API is failing: the next try sends it

    publisher = NodePublisher(api, NODE, on_error=on_error)

    async def scenario() -> None:
        task = asyncio.create_task(publisher.run())
        try:
            publisher.publish(STATE)
            publisher.event("TemperEnforcing", "loaded")
            await until(lambda: publisher.settled)
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    run(scenario())
    assert recorder.statuses == [429, 500]
    assert recorder.waits == [1, None]
    assert [body["metadata"]["annotations"] for _, body, _ in api.applies] == [LOAD]
    assert reasons(api) == ["TemperEnforcing"]


def test_a_publisher_asked_for_nothing_is_settled() -> None:
    assert NodePublisher(FakeKube(NODE), "node-a").settled
