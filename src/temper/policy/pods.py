"""Pods as the planner sees them, parsed once from Kubernetes Pod objects.

The planner needs little of a pod: who it is, where its cgroup lives, its QoS class, its
priority, and its CPU requests and limits. `parse_pod_list` turns a PodList (as
`kubectl get pods -o json` prints it) into `Pod` values and reports malformed objects with their
position and field, so one bad pod never surfaces as a traceback. A `PodSnapshot` is what a pod
source (`temper.host.podsource`, `temper.kube.podwatch`) yields: its pods, and what it left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from temper.policy.errors import InputError
from temper.policy.quantity import cpu_millis, parse_quantity
from temper.policy.tiers import QosClass

FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
# Kubelet names a static pod's cgroup after the static pod's UID; its mirror pod in the API has a
# different UID and carries the static one in this annotation (set by the kubelet only).
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_QOS_RESOURCES = ("cpu", "memory")


@dataclass(frozen=True)
class Pod:
    """One pod on the node, reduced to what tiering and planning need."""

    uid: str
    namespace: str
    name: str
    qos: QosClass
    cpu_request_millis: int
    cpu_limit_millis: int | None  # None: some container has no CPU limit
    priority_class: str | None = None
    priority: int | None = None
    node_name: str | None = None
    phase: str = "Running"
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)
    cgroup_uid: str = ""  # the UID in the pod's cgroup name; defaults to `uid`

    def __post_init__(self) -> None:
        if not self.cgroup_uid:
            object.__setattr__(self, "cgroup_uid", self.uid)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES


@dataclass(frozen=True)
class PodSnapshot:
    """A pod source's pods at one moment (a pod directory's, or the API server's for this
    node), and what was wrong with it."""

    pods: tuple[Pod, ...]  # every pod that parsed, in the source's order
    errors: tuple[str, ...]  # one line per pod or file left out, naming it
    fingerprint: str  # changes whenever the source's pods change


def parse_pod_list(document: object) -> tuple[Pod, ...]:
    """The pods of a PodList (or a List of Pods, or one Pod object)."""
    if not isinstance(document, Mapping):
        raise InputError(
            "expected a PodList object (kubectl get pods -o json), got " + _kind(document)
        )
    if document.get("kind") == "Pod":
        return (parse_pod(document, "pod"),)
    items = document.get("items")
    if not isinstance(items, list):
        raise InputError("expected a PodList with an 'items' list (kubectl get pods -o json)")
    return tuple(parse_pod(item, f"items[{index}]") for index, item in enumerate(items))


def parse_pod(obj: object, where: str) -> Pod:
    """One Pod object; InputError names `where` and the field on any malformed input."""
    if not isinstance(obj, Mapping):
        raise InputError(f"{where}: expected a Pod object, got {_kind(obj)}")
    meta = _table(obj, "metadata", where)
    spec = _table(obj, "spec", where)
    status = _table(obj, "status", where)
    name = _text(meta, "name", f"{where}.metadata", required=True) or ""
    namespace = _text(meta, "namespace", f"{where}.metadata") or "default"
    where = f"{where} ({namespace}/{name})"
    uid = _text(meta, "uid", f"{where}.metadata", required=True) or ""
    try:
        return _build_pod(meta, spec, status, uid=uid, namespace=namespace, name=name, where=where)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from exc


def _build_pod(
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    uid: str,
    namespace: str,
    name: str,
    where: str,
) -> Pod:
    containers = _containers(spec, "containers", where)
    init_containers = _containers(spec, "initContainers", where)
    annotations = _string_map(meta, "annotations", f"{where}.metadata")
    return Pod(
        uid=uid,
        namespace=namespace,
        name=name,
        qos=_qos_class(status, containers + init_containers, where),
        cpu_request_millis=_pod_cpu_request(spec, containers, init_containers),
        cpu_limit_millis=_pod_cpu_limit(containers, init_containers),
        priority_class=_text(spec, "priorityClassName", f"{where}.spec"),
        priority=_priority(spec, where),
        node_name=_text(spec, "nodeName", f"{where}.spec"),
        phase=_text(status, "phase", f"{where}.status") or "Pending",
        labels=_string_map(meta, "labels", f"{where}.metadata"),
        cgroup_uid=annotations.get(MIRROR_ANNOTATION, ""),
    )


def compute_qos_class(containers: Sequence[Mapping[str, Any]]) -> QosClass:
    """The QoS class Kubernetes gives a pod with these containers (init containers included).

    As Kubernetes' `GetPodQOS`: only CPU and memory count, and zero quantities count as unset.
    Guaranteed: every container limits both, and the pod's summed requests equal its summed
    limits (a missing request defaults to the limit, as the API server does). BestEffort: no
    request or limit at all. Otherwise Burstable.
    """
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for container in containers:
        limited = set()
        for resource in _QOS_RESOURCES:
            request = _quantity(container, "requests", resource)
            limit = _quantity(container, "limits", resource)
            if request:
                requests[resource] = requests.get(resource, Decimal(0)) + request
            if limit:
                limits[resource] = limits.get(resource, Decimal(0)) + limit
                limited.add(resource)
        guaranteed = guaranteed and limited == set(_QOS_RESOURCES)
    if not requests and not limits:
        return QosClass.BEST_EFFORT
    return QosClass.GUARANTEED if guaranteed and requests == limits else QosClass.BURSTABLE


def _qos_class(
    status: Mapping[str, Any], containers: Sequence[Mapping[str, Any]], where: str
) -> QosClass:
    stated = status.get("qosClass")
    if stated is None:
        return compute_qos_class(containers)
    try:
        return QosClass(stated)
    except ValueError:
        names = ", ".join(q.value for q in QosClass)
        raise InputError(f"{where}.status.qosClass: {stated!r} is not one of {names}") from None


def _pod_cpu_request(
    spec: Mapping[str, Any],
    containers: Sequence[Mapping[str, Any]],
    init_containers: Sequence[Mapping[str, Any]],
) -> int:
    """Kubernetes' effective pod request: max(sum of containers, largest init) + overhead."""
    running = sum(_cpu(container, "requests") or 0 for container in containers)
    init = max((_cpu(container, "requests") or 0 for container in init_containers), default=0)
    overhead = spec.get("overhead") or {}
    extra = (
        cpu_millis(overhead["cpu"]) if isinstance(overhead, Mapping) and "cpu" in overhead else 0
    )
    return max(running, init) + extra


def _pod_cpu_limit(
    containers: Sequence[Mapping[str, Any]], init_containers: Sequence[Mapping[str, Any]]
) -> int | None:
    limits = [_cpu(container, "limits") for container in containers]
    if not limits or any(limit is None for limit in limits):
        return None
    init = max((_cpu(container, "limits") or 0 for container in init_containers), default=0)
    return max(sum(limit or 0 for limit in limits), init)


def _cpu(container: Mapping[str, Any], which: str) -> int | None:
    """A container's CPU request or limit in millicores; None when unset or zero (no limit)."""
    value = _quantity(container, which, "cpu")
    return int((value * 1000).to_integral_value(rounding="ROUND_CEILING")) if value else None


def _quantity(container: Mapping[str, Any], which: str, resource: str) -> Decimal | None:
    """One request or limit; a missing request defaults to the limit, as the API server does."""
    requests, limits = _resources(container)
    raw = (
        limits.get(resource) if which == "limits" else requests.get(resource, limits.get(resource))
    )
    if raw is None:
        return None
    try:
        return parse_quantity(raw)
    except ValueError as exc:
        name = container.get("name")
        raise ValueError(f"container {name!r} resources.{which}.{resource}: {exc}") from exc


def _resources(container: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    resources = container.get("resources") or {}
    if not isinstance(resources, Mapping):
        raise ValueError(f"container {container.get('name')!r}: resources must be an object")
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    if not isinstance(requests, Mapping) or not isinstance(limits, Mapping):
        raise ValueError(
            f"container {container.get('name')!r}: requests and limits must be objects"
        )
    return requests, limits


def _priority(spec: Mapping[str, Any], where: str) -> int | None:
    value = spec.get("priority")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}.spec.priority: expected an integer, got {value!r}")
    return value


def _containers(spec: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = spec.get(key) or []
    if not isinstance(value, list) or not all(isinstance(c, Mapping) for c in value):
        raise InputError(f"{where}.spec.{key}: expected a list of container objects")
    return list(value)


def _table(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key) or {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}.{key}: expected an object, got {_kind(value)}")
    return value


def _text(obj: Mapping[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise InputError(f"{where}.{key}: missing")
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}.{key}: expected a string, got {_kind(value)}")
    return value


def _string_map(obj: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = obj.get(key) or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InputError(f"{where}.{key}: expected a map of strings")
    return dict(value)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
