"""Builders and hypothesis strategies for pods, pod manifests and snapshots, shared by the test
tiers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from temper.policy.machine import synthetic_shape
from temper.policy.observe import (
    LayerView,
    Pressure,
    RuleResult,
    SamplerStats,
    Snapshot,
    TierStats,
    Verdict,
)
from temper.policy.pods import Pod
from temper.policy.tiers import RECOMMENDED_PRIORITY_CLASSES, QosClass, Tier

NAMESPACES = ("shop", "web", "batch", "kube-system", "ml")
PodManifest = dict[str, Any]


def make_pod(
    name: str,
    qos: QosClass = QosClass.BURSTABLE,
    *,
    namespace: str = "default",
    request: int = 100,
    limit: int | None = None,
    priority_class: str | None = None,
    priority: int | None = None,
    labels: dict[str, str] | None = None,
    node: str | None = "node-a",
    phase: str = "Running",
    uid: str | None = None,
) -> Pod:
    """A pod with CPU in millicores; the uid is derived from the name unless given."""
    if priority_class is not None and priority is None:
        priority = RECOMMENDED_PRIORITY_CLASSES.get(priority_class)
    return Pod(
        uid=uid or str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}/{name}")),
        namespace=namespace,
        name=name,
        qos=qos,
        cpu_request_millis=request,
        cpu_limit_millis=limit,
        priority_class=priority_class,
        priority=priority,
        node_name=node,
        phase=phase,
        labels=labels or {},
    )


def pod_manifest(
    name: str,
    namespace: str = "default",
    *,
    uid: str | None = None,
    node: str | None = "node-a",
    cpu_request: str | None = None,
    cpu_limit: str | None = None,
    priority_class: str | None = None,
    phase: str = "Running",
    labels: Mapping[str, str] | None = None,
) -> PodManifest:
    """A Pod object as `kubectl get pods -o json` prints it, with one container: what a PodList
    file or a pod directory holds. Not `make_pod`, which builds the parsed `Pod` value."""
    resources: dict[str, dict[str, str]] = {}
    if cpu_request is not None:
        resources["requests"] = {"cpu": cpu_request}
    if cpu_limit is not None:
        resources["limits"] = {"cpu": cpu_limit}
    spec: dict[str, Any] = {"containers": [{"name": "main", "resources": resources}]}
    if node is not None:
        spec["nodeName"] = node
    if priority_class is not None:
        spec["priorityClassName"] = priority_class
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{namespace}-{name}",
            "labels": dict(labels or {}),
        },
        "spec": spec,
        "status": {"phase": phase},
    }


def shop_pod(name: str, number: int, priority_class: str | None = None) -> PodManifest:
    """A manifest for the agent's pod directory: namespace shop, 500m requested, a uid
    numbered `number`, no node."""
    return pod_manifest(
        name,
        "shop",
        uid=f"11111111-0000-4000-8000-{number:012d}",
        node=None,
        cpu_request="500m",
        priority_class=priority_class,
    )


# Priorities around every band edge, plus "no PriorityClass".
_PRIORITIES = st.one_of(
    st.none(),
    st.sampled_from([-100, -1, 0, 100, 999, 1000, 10_000, 99_999, 100_000, 1_000_000]),
    st.sampled_from([999_999_999, 1_000_000_000, 2_000_000_000, 2_000_001_000]),
    st.integers(-(2**31), 2**31 - 1),
)


@st.composite
def pods(draw: st.DrawFn, index: int) -> Pod:
    """One arbitrary pod; `index` keeps names unique within a set."""
    qos = draw(st.sampled_from(QosClass))
    request = 0 if qos is QosClass.BEST_EFFORT else draw(st.integers(0, 8000))
    limit = None
    if qos is QosClass.GUARANTEED:
        limit = request
    elif qos is QosClass.BURSTABLE:
        limit = draw(st.one_of(st.none(), st.integers(request, 16_000)))
    priority = draw(_PRIORITIES)
    return make_pod(
        f"pod-{index}",
        qos,
        namespace=draw(st.sampled_from(NAMESPACES)),
        request=request,
        limit=limit,
        priority_class=None if priority is None else "some-class",
        priority=priority,
        labels={"app": draw(st.sampled_from(["checkout", "cart", "etl"]))},
        uid=str(uuid.UUID(int=draw(st.integers(0, 2**64 - 1)) << 64 | index)),
    )


@st.composite
def pod_sets(draw: st.DrawFn, max_size: int = 60) -> list[Pod]:
    size = draw(st.integers(0, max_size))
    return [draw(pods(i)) for i in range(size)]


def full_snapshot() -> Snapshot:
    """A snapshot with something in every field, so every metric family has samples."""
    return Snapshot(
        taken_at=1_700_000_000.5,
        shape=synthetic_shape(1, 2, 2, 1),  # 4 CPUs, 2 cores x 2 threads
        mode="enforcing",
        mode_reason="scx_layered is loaded and places every pod",
        tiers=(
            TierStats(Tier.CRITICAL, pods=1, threads=4, samples=40, run_s=2.5, wait_s=0.25),
            TierStats(
                Tier.BACKGROUND,
                pods=2,
                threads=10,
                samples=100,
                run_s=5.0,
                wait_s=3.0,
                outside_layer=7,
                smt_shared=12,
            ),
        ),
        layers=(
            LayerView("critical", Tier.CRITICAL, "confined", 4, 150.0, (0, 2), max_cpus=2),
            LayerView("system", None, "open", 30, 25.0, (1, 3), max_cpus=None),
        ),
        lint=(
            RuleResult("smt-siblings", Verdict.FAIL, "critical shares cores", ("cpu 0", "cpu 2")),
            RuleResult("cpu-manager", Verdict.PASS, "static CPU manager is off"),
        ),
        node_pressure=Pressure(1.5, 2.0, 12_500_000, full_avg10=0.5, full_total_us=3_000_000),
        pod_pressure={
            "shop/api": Pressure(0.1, 0.2, 2_000_000),
            "batch/crunch": Pressure(9.0, 8.0, 40_000_000),
            "gone/pod": Pressure(0.0, 0.0, 1),  # no tier known: not shown
        },
        pod_tiers={"shop/api": Tier.CRITICAL, "batch/crunch": Tier.BACKGROUND},
        sampler=SamplerStats(2000.0, 0.1, 1.0, samples=140, exited=3, skipped=9, rounds=50),
        problems=("/proc/77/schedstat: permission denied",),
    )
