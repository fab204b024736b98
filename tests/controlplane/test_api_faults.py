"""`temper-agent` against API faults the real server will not make on cue (docs/reliability.md
rows C2, C3, C5), through `FaultProxy`, and with its RBAC revoked on the real server.

Each test runs a real agent on a fake host, its kubeconfig pointing at the proxy, on a node with
20 pods of the temper tiers, and waits for the published tier load to match first. Then the
fault: enforcement must hold all through it; pods are added and deleted meanwhile (as admin,
straight to the API server, past the proxy); once the fault clears the tier load must match
again: nothing lost. The proxy's count of requests per fault window tells a backoff from a hot
loop.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_agent_in_cluster import expected_load, make_pods, published_load

from conftest import Cluster, apply, object_path, render_chart
from temper.kube.api import Backoff
from temper_testing.kubetest.agentproc import AgentProcess
from temper_testing.kubetest.controlplane import ControlPlane
from temper_testing.kubetest.faultproxy import FaultProxy, Seen, Window
from waiting import wait_until

PODS = 20
# The agent's loops that call the API server, each on its own: the pod watch, the Node watch
# (the kill switch) and the publisher (annotations and Events).
LOOPS = ("pods", "node", "publish")
RETRY_AFTER_S = 3
CATCH_UP_S = 35  # a backoff may have reached 16 s (30 s at most) when the fault clears


@dataclass
class Rig:
    """One agent on one node, behind the proxy; `pods` is what the node should have."""

    cluster: Cluster
    proxy: FaultProxy
    agent: AgentProcess
    node: str
    pods: list[dict[str, Any]]

    def matches(self) -> bool:
        return published_load(self.cluster, self.node) == expected_load(self.pods)

    def wait_for_load(self, what: str, timeout_s: float = CATCH_UP_S) -> None:
        """Wait until the published tier load is that of `pods`; say what differs if not."""
        try:
            wait_until(self.matches, timeout_s, what)
        except AssertionError as exc:
            published = published_load(self.cluster, self.node)
            errors = self.agent.events("api-error")[-6:]
            raise AssertionError(
                f"{exc}; published {published}, expected {expected_load(self.pods)}; "
                f"last api errors {errors}"
            ) from None

    def caught_up(self, what: str) -> None:
        """Wait for the tier load of `pods`, then for scx_layered to be ours again.

        The pods added during the fault can make the running config misplace them, and the agent
        then replaces the scheduler once it sees them: the handover leaves the node on the stock
        scheduler for a moment (the restart gap), which a single look could land in.
        """
        self.wait_for_load(what)
        wait_until(self.agent.enforcing, 15, f"scx_layered enforcing, {what}")

    def churn(self, start: int) -> None:
        """Delete three of the node's pods and add four, past the proxy."""
        for pod in self.pods[:3]:
            self.cluster.delete_pod(pod)
        self.pods = self.pods[3:] + make_pods(self.cluster, self.node, 4, start=start)

    def hold(self, seconds: float) -> None:
        """Wait `seconds`, checking twice a second that the agent runs and still enforces."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            assert self.agent.process is not None
            assert self.agent.process.poll() is None, "the agent exited during the fault"
            assert self.agent.enforcing(), "enforcement dropped during the fault"
            time.sleep(min(0.5, left))

    def api_errors(self, watch: str, since_ts: float, until_ts: float = math.inf) -> list[str]:
        return [
            e["reason"]
            for e in self.agent.events("api-error")
            if e["watch"] == watch and since_ts <= e["ts"] <= until_ts
        ]


@pytest.fixture
def proxy(control_plane: ControlPlane, tmp_path: Path) -> Iterator[FaultProxy]:
    with FaultProxy.start(control_plane, tmp_path / "proxy") as proxy:
        yield proxy


@pytest.fixture
def rig_for(cluster: Cluster, proxy: FaultProxy, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    started: list[AgentProcess] = []

    def make(*agent_args: str) -> Rig:
        node = cluster.create_node()
        pods = make_pods(cluster, node, PODS)
        kubeconfig = proxy.kubeconfig_for_token(f"agent-{node}", cluster.agent_token(node))
        agent = AgentProcess(tmp_path, node, kubeconfig, agent_args)
        started.append(agent)
        agent.start()
        rig = Rig(cluster, proxy, agent, node, pods)
        rig.wait_for_load(f"tier load of {PODS} pods published through the proxy", 30)
        wait_until(agent.enforcing, 30, "scx_layered enforcing")
        return rig

    yield make
    for agent in started:
        agent.stop()


def loop_of(seen: Seen) -> str:
    """Which of the agent's loops made a request."""
    if seen.target.startswith("/api/v1/pods"):
        return "pods"
    if seen.method == "GET" and seen.target.startswith("/api/v1/nodes"):
        return "node"
    return "publish"


def most_requests(window_s: float, retry_after_s: float | None = None) -> int:
    """The most requests `LOOPS` can make in `window_s` of failures.

    Each loop asks once at once, then waits at least its backoff's least delay between two
    failures: half the doubling ceiling (`Backoff`), or Retry-After when that is longer. Add one
    per loop for a request under way as the window opened or a stream ended by the proxy, which
    the loop reopens without waiting. With Retry-After: 3 over 10 s that is 1 + 3 = 4 requests
    a loop, 3 x (4 + 1) = 15 in all; with no Retry-After over 5 s (least delays 0.25, 0.5, 1,
    2 s) 5 a loop, 18 in all. A hot loop makes hundreds.
    """
    backoff = Backoff()
    attempts, elapsed = 1, 0.0
    while True:
        ceiling = min(backoff.max_s, backoff.first_s * 2 ** (attempts - 1))
        elapsed += max(ceiling / 2, min(retry_after_s or 0.0, backoff.max_s))
        if elapsed > window_s:
            return len(LOOPS) * (attempts + 1)
        attempts += 1


def gaps_by_loop(window: Window) -> dict[str, list[float]]:
    """For each loop, the seconds between its consecutive requests in the window."""
    times: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    for seen in window.requests:
        times[loop_of(seen)].append(seen.at_s)
    return {loop: [b - a for a, b in itertools.pairwise(at)] for loop, at in times.items()}


def assert_backed_off(window: Window, least_gap_s: float, retry_after_s: float | None) -> None:
    bound = most_requests(window.duration_s, retry_after_s)
    described = Counter(f"{loop_of(s)} {s.method} {s.answer}" for s in window.requests)
    assert window.count() <= bound, f"{window.count()} requests > {bound}: {described}"
    assert window.count("/api/v1/pods") >= 2, f"the pod watch never tried again: {described}"
    for loop, gaps in gaps_by_loop(window).items():
        assert all(gap >= least_gap_s for gap in gaps), f"{loop} asked again too soon: {gaps}"


def test_429_with_retry_after_is_honoured_and_nothing_is_lost(rig_for: Any) -> None:
    rig: Rig = rig_for()
    began = time.time()
    rig.proxy.answer(429, retry_after_s=RETRY_AFTER_S)  # open watches end, as on a restart
    rig.churn(start=100)
    rig.hold(10)
    window = rig.proxy.pass_through()

    # Retry-After is a floor: no loop asks again sooner. The times are the proxy's, taken as
    # each request arrives, so a busy machine may show a gap a little short; without the
    # floor the first gaps would be under a second (0.25-0.5 s, then 0.5-1 s).
    assert_backed_off(window, RETRY_AFTER_S - 0.5, RETRY_AFTER_S)
    errors = rig.api_errors("pods", began)
    assert any(reason.startswith("429") for reason in errors), errors

    rig.caught_up("tier load after the 429s")

    # The same error after a recovery is news again, and is logged again. (A plain wait: the
    # churn above may still be replacing the scheduler, which `hold` would count as a drop.)
    recovered = time.time()
    rig.proxy.answer(429, retry_after_s=RETRY_AFTER_S)
    time.sleep(4)
    rig.proxy.pass_through()
    again = rig.api_errors("pods", recovered)
    assert any(reason.startswith("429") for reason in again), rig.agent.events("api-error")
    rig.wait_for_load("tier load after the second 429s")


def test_500_and_503_bursts_back_off_and_nothing_is_lost(rig_for: Any) -> None:
    rig: Rig = rig_for()
    began = time.time()
    least_gap_s = Backoff().first_s / 2 - 0.05
    rig.proxy.answer(500)
    rig.churn(start=200)
    rig.hold(5)
    first = rig.proxy.pass_through()
    rig.hold(1)
    rig.proxy.answer(503)
    rig.churn(start=300)
    rig.hold(5)
    second = rig.proxy.pass_through()

    assert_backed_off(first, least_gap_s, None)
    # The second burst comes before any success could reset the backoffs: fewer still.
    assert second.count() <= most_requests(second.duration_s), second.requests[:30]
    errors = rig.api_errors("pods", began)
    assert any(reason.startswith("500") for reason in errors), errors

    rig.caught_up("tier load after the 500 and 503 bursts")


READ_TIMEOUT_S = 5


def test_a_silent_connection_is_noticed_and_the_watch_catches_up(rig_for: Any) -> None:
    rig: Rig = rig_for("--watch-read-timeout-s", str(READ_TIMEOUT_S))
    # A change just before the hang: the pod watch has just had an event (its backoff is
    # reset) when its stream goes silent. With a read timeout this short the agent also takes
    # quiet, healthy watches for hung (the API server sends bookmarks at most once a minute,
    # and none while no pod in the cluster changes); a fresh event keeps the timeline below
    # deterministic.
    rig.pods += make_pods(rig.cluster, rig.node, 1, start=400)
    rig.wait_for_load("tier load before the hang")

    began = time.time()
    rig.proxy.hang()
    rig.churn(start=500)  # the open pod watch carries these to the proxy, which holds them
    # The silent stream times out after 5 s, the next watch is held and times out 5 s after
    # it is sent (backoff in between: under a second): both within 14 s.
    rig.hold(14)
    ended = time.time()
    window = rig.proxy.pass_through()

    held = [s for s in window.requests if loop_of(s) == "pods" and s.answer == "held"]
    assert held, f"the agent never gave up the silent pod watch: {window.requests}"
    noticed = rig.api_errors("pods", began, ended)
    context = f"hang {began:.1f}-{ended:.1f}: {rig.agent.events('api-error')}"
    assert any("Timeout" in reason for reason in noticed), context

    rig.caught_up("tier load after the hang")


def test_revoked_rbac_keeps_enforcing_and_catches_up_when_restored(
    control_plane: ControlPlane, rig_for: Any
) -> None:
    rig: Rig = rig_for()
    binding = next(
        obj
        for obj in render_chart(control_plane)
        if obj["kind"] == "ClusterRoleBinding" and obj["metadata"]["name"] == "temper-agent"
    )
    try:
        began = time.time()
        control_plane.ok("DELETE", object_path(binding))
        # Authorisation is checked when a request starts: open watches would go on. End them,
        # as the server does when their time is up, so the agent must ask again.
        rig.proxy.end_streams()
        rig.churn(start=600)

        def forbidden() -> list[str]:
            return [r for r in rig.api_errors("pods", began) if r.startswith("403")]

        wait_until(forbidden, 15, "an api-error with 403 for the pod watch")
        rig.hold(2)
    finally:
        apply(control_plane, binding)

    rig.caught_up("tier load after the binding is back")
