"""Builders and hypothesis strategies for pods, shared by the test tiers."""

from __future__ import annotations

import uuid

from hypothesis import strategies as st

from temper.policy.pods import Pod
from temper.policy.tiers import RECOMMENDED_PRIORITY_CLASSES, QosClass

NAMESPACES = ("shop", "web", "batch", "kube-system", "ml")


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
