"""`temper-agent --node-name` against the real API server, with the chart's identity.

The agent is a real process on a fake host (fake sysfs, the fake scx_layered child), and it
talks to kube-apiserver with a token of the chart's service account bound to a pod on its
node. Faults come from the real parts: pods changed while the agent is frozen, etcd
compacted and the API server restarted (its watch resumes from a resourceVersion that is gone:
410), and a 30 s outage.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Cluster, tier_load
from temper.host.sched_ext import SchedState, read_sched_ext
from temper_testing.kubetest.agentproc import AgentProcess
from temper_testing.kubetest.controlplane import ControlPlane
from waiting import wait_until

TIERS = ("critical", "high", "normal", "low", "background")


@pytest.fixture
def agent_for(tmp_path: Path, cluster: Cluster) -> Iterator[Any]:
    started: list[AgentProcess] = []

    def make(node: str, kubeconfig: Path | None = None) -> AgentProcess:
        agent = AgentProcess(tmp_path, node, kubeconfig or cluster.agent_kubeconfig(node))
        started.append(agent)
        agent.start()
        return agent

    yield make
    for agent in started:
        agent.stop()


def expected_load(pods: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per tier: the pods and their CPU requests, from the objects as created, and the agent's
    own pod (system-node-critical: high)."""
    count: Counter[str] = Counter({"high": 1})
    requested: Counter[str] = Counter({"high": 100})
    for pod in pods:
        tier = pod["spec"]["priorityClassName"].removeprefix("temper-")
        count[tier] += 1
        requested[tier] += int(pod["spec"]["containers"][0]["resources"]["requests"]["cpu"][:-1])
    return {t: {"pods": count[t], "requested_millicpu": requested[t]} for t in TIERS}


def published_load(cluster: Cluster, node: str) -> dict[str, dict[str, int]] | None:
    load = tier_load(cluster.annotations(node))
    if load is None:
        return None
    return {t: {k: v for k, v in load[t].items() if k != "used_millicpu"} for t in TIERS}


def state(cluster: Cluster, node: str) -> dict[str, Any]:
    text = cluster.annotations(node).get("temper.io/state")
    return json.loads(text) if text else {}


def make_pods(cluster: Cluster, node: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        cluster.create_pod(
            node,
            priority_class=f"temper-{TIERS[(start + i) % len(TIERS)]}",
            cpu_millis=50 + 10 * ((start + i) % 7),
        )
        for i in range(n)
    ]


# Its own waits add up to 190 s, a 30 s outage among them, plus four API server restarts: past
# the default 120 s on a busy 2-core machine (2026-12-03, beside a lab run), though no wait failed.
@pytest.mark.timeout(600)
def test_tier_load_follows_a_hundred_pods_through_churn_410_and_an_outage(
    control_plane: ControlPlane, cluster: Cluster, agent_for: Any
) -> None:
    node, other = cluster.create_node(), cluster.create_node()
    pods = make_pods(cluster, node, 100)
    make_pods(cluster, other, 20)  # another node's pods never count
    agent = agent_for(node)

    def matches() -> bool:
        return published_load(cluster, node) == expected_load(pods)

    wait_until(matches, 30, "tier load of 100 pods published")
    wait_until(agent.enforcing, 30, "scx_layered enforcing")
    wait_until(lambda: state(cluster, node).get("mode") == "enforcing", 5, "state enforcing")
    modes = [e["mode"] for e in agent.events("transition")]
    assert "safe-mode" not in modes, modes  # the kill switch was read before deciding

    # Churn: 10 deleted, 5 added.
    for pod in pods[:10]:
        cluster.delete_pod(pod)
    pods = pods[10:] + make_pods(cluster, node, 5, start=100)
    wait_until(matches, 20, "tier load after churn")

    # 410: the agent is frozen and its watch cut; pods change, etcd compacts and the API
    # server restarts (its watch cache forgets too). The agent resumes from a resourceVersion
    # that no longer exists, and must list again, deletions included.
    assert agent.process is not None
    agent.process.send_signal(signal.SIGSTOP)
    control_plane.stop_apiserver()
    control_plane.start_apiserver()
    for pod in pods[:7]:
        cluster.delete_pod(pod)
    pods = pods[7:] + make_pods(cluster, node, 3, start=200)
    control_plane.compact()
    control_plane.stop_apiserver()
    control_plane.start_apiserver()
    agent.process.send_signal(signal.SIGCONT)
    wait_until(matches, 30, "tier load after a forced 410")
    errors = [e["reason"] for e in agent.events("api-error") if e["watch"] == "pods"]
    assert any(reason.startswith("410") for reason in errors), errors

    # A 30 s outage: enforcement holds, nothing is lost, the state catches up afterwards.
    control_plane.stop_apiserver()
    time.sleep(30)
    assert agent.enforcing(), "enforcement dropped during the API outage"
    control_plane.start_apiserver()
    for pod in pods[:3]:
        cluster.delete_pod(pod)
    pods = pods[3:] + make_pods(cluster, node, 4, start=300)
    wait_until(matches, 30, "tier load after a 30 s outage")
    # The new pods may need a new config: the replace's handover is a moment on the stock
    # scheduler, so wait for scx_layered rather than look once.
    wait_until(agent.enforcing, 15, "scx_layered enforcing after the outage")
    reasons = [e["reason"] for e in cluster.node_events(node)]
    assert "TemperEnforcing" in reasons, reasons


def test_safe_mode_unloads_within_5_s_and_holds_through_a_restart(
    control_plane: ControlPlane, cluster: Cluster, agent_for: Any
) -> None:
    node = cluster.create_node()
    make_pods(cluster, node, 5)
    kubeconfig = cluster.agent_kubeconfig(node)
    agent = agent_for(node, kubeconfig)
    wait_until(agent.enforcing, 30, "scx_layered enforcing")
    wait_until(lambda: state(cluster, node).get("mode") == "enforcing", 15, "state enforcing")

    cluster.annotate(node, "temper.io/safe-mode", "true")
    set_at = time.monotonic()
    wait_until(lambda: state(cluster, node).get("mode") == "safe-mode", 5, "state safe-mode")
    took = time.monotonic() - set_at
    assert read_sched_ext(agent.host).state is SchedState.DISABLED
    assert took <= 5.0
    assert "safe-mode" in state(cluster, node)["reason"]

    # Restarted with the API server away, it remembers safe mode and loads nothing.
    agent.stop()
    control_plane.stop_apiserver()
    try:
        agent.start()
        wait_until(lambda: agent.events("transition")[-1]["mode"] == "safe-mode", 20, "restart")
        time.sleep(3)
        assert read_sched_ext(agent.host).state is SchedState.DISABLED
    finally:
        control_plane.start_apiserver()

    # Cleared: it loads again.
    cluster.annotate(node, "temper.io/safe-mode", None)
    wait_until(agent.enforcing, 30, "enforcing after safe mode cleared")
    reasons = [e["reason"] for e in cluster.node_events(node)]
    assert "TemperSafeMode" in reasons, reasons


def test_unrecognised_safe_mode_value_counts_as_on(cluster: Cluster, agent_for: Any) -> None:
    node = cluster.create_node()
    make_pods(cluster, node, 3)
    cluster.annotate(node, "temper.io/safe-mode", "yes please")
    agent = agent_for(node)
    wait_until(lambda: state(cluster, node).get("mode") == "safe-mode", 20, "state safe-mode")
    assert not agent.enforcing()
    notes = agent.events("kill-switch-value")
    assert notes
    assert "treated as" in notes[0]["reason"]


def test_cold_start_with_the_api_unreachable_loads_nothing(
    control_plane: ControlPlane, cluster: Cluster, tmp_path: Path
) -> None:
    node = cluster.create_node()
    unreachable = tmp_path / "unreachable.kubeconfig"
    text = control_plane.kubeconfig_for_token("x", "x").read_text()
    unreachable.write_text(text.replace(control_plane.server, "https://127.0.0.1:1"))
    agent = AgentProcess(tmp_path, node, unreachable)
    agent.start()
    try:
        wait_until(lambda: agent.events("api-error"), 20, "the agent notices the API is away")
        time.sleep(2)
        assert read_sched_ext(agent.host).state is SchedState.DISABLED
        assert not (tmp_path / "state" / "kill-switch.json").exists()
    finally:
        agent.stop()


def test_operator_actions_become_node_events(cluster: Cluster, agent_for: Any) -> None:
    """temper-cli's changes are audited on the host and, in a cluster, as Events on the Node."""
    node = cluster.create_node("ops")
    pod = cluster.create_pod(node, priority_class="temper-normal")
    agent = agent_for(node)
    wait_until(lambda: agent.events("api"), 30, "the agent's API")
    target = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    wait_until(agent.enforcing, 30, "enforcing")
    cli = [sys.executable, "-m", "temper.cli.agentctl", "--socket", str(agent.api_socket)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], capture_output=True, text=True, timeout=60, check=False
        )

    done = run("tier", "assign", target, "critical")
    assert done.returncode == 0, done.stderr
    assert run("tier", "clear", "work/nope").returncode == 5

    def operator_events() -> list[dict[str, Any]]:
        found = cluster.node_events(node)
        return [e for e in found if e["reason"] == "TemperOperatorAction"]

    wait_until(lambda: len(operator_events()) == 2, 30, "two TemperOperatorAction Events")
    by_type = {e["type"]: e["message"] for e in operator_events()}
    assert by_type["Normal"].startswith("AssignTier by root: OK")
    assert target.split("/")[1] in by_type["Normal"]
    assert by_type["Warning"].startswith("ClearTier by root: NOT_FOUND")
