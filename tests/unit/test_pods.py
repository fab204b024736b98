"""Pod parsing: Kubernetes QoS rules, effective CPU requests and limits, and input errors."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.policy.errors import InputError
from temper.policy.pods import (
    MIRROR_ANNOTATION,
    Pod,
    compute_qos_class,
    parse_pod,
    parse_pod_list,
)
from temper.policy.tiers import QosClass

G, B, BE = QosClass.GUARANTEED, QosClass.BURSTABLE, QosClass.BEST_EFFORT


def container(
    name: str = "app",
    requests: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": name, "resources": resources}


def full(cpu: str = "1", memory: str = "1Gi") -> dict[str, Any]:
    """A container whose requests equal its limits for CPU and memory."""
    return container(requests={"cpu": cpu, "memory": memory}, limits={"cpu": cpu, "memory": memory})


def pod_obj(
    name: str = "web",
    *,
    uid: str = "0b1c2d3e-0000-4000-8000-000000000001",
    namespace: str | None = "shop",
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid}
    if namespace is not None:
        meta["namespace"] = namespace
    body: dict[str, Any] = {"containers": [container()] if containers is None else containers}
    if init_containers is not None:
        body["initContainers"] = init_containers
    body.update(spec)
    return {"kind": "Pod", "metadata": meta, "spec": body, "status": {"phase": "Running"}}


# --- compute_qos_class -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("containers", "expected"),
    [
        pytest.param([full()], G, id="requests-equal-limits"),
        pytest.param([full(), full("250m", "64Mi")], G, id="every-container-full"),
        pytest.param(
            [container(limits={"cpu": "2", "memory": "1Gi"})], G, id="missing-requests-default"
        ),
        pytest.param(
            [container(requests={"cpu": "1"}, limits={"cpu": "1000m", "memory": "1Gi"})],
            G,
            id="1-equals-1000m",
        ),
        pytest.param(
            [
                container(
                    requests={"cpu": "1", "memory": "1Gi"},
                    limits={"cpu": 1, "memory": "1073741824"},
                )
            ],
            G,
            id="numbers-and-strings-compare-exactly",
        ),
        pytest.param(
            [
                container(
                    requests={"cpu": "500m", "memory": "1Gi"}, limits=full()["resources"]["limits"]
                )
            ],
            B,
            id="cpu-request-below-limit",
        ),
        pytest.param(
            [
                container(
                    requests={"cpu": "1", "memory": "512Mi"}, limits={"cpu": "1", "memory": "1Gi"}
                )
            ],
            B,
            id="memory-request-below-limit",
        ),
        pytest.param([container(limits={"cpu": "1"})], B, id="cpu-limit-only"),
        pytest.param([container(limits={"memory": "1Gi"})], B, id="memory-limit-only"),
        pytest.param([container(requests={"cpu": "100m"})], B, id="request-only"),
        pytest.param([container(requests={"memory": "10Mi"})], B, id="memory-request-only"),
        pytest.param([full(), container("sidecar")], B, id="one-container-unset"),
        pytest.param([container(), container("b")], BE, id="nothing-set"),
        pytest.param([{"name": "bare"}], BE, id="no-resources-key"),
        pytest.param(
            [container(requests={"cpu": "0", "memory": "0"}, limits={"cpu": "0m"})],
            BE,
            id="zeros-count-as-unset",
        ),
        pytest.param([], BE, id="no-containers"),
    ],
)
def test_compute_qos_class(containers: list[dict[str, Any]], expected: QosClass) -> None:
    assert compute_qos_class(containers) is expected


def test_init_container_without_limits_makes_a_pod_burstable() -> None:
    assert compute_qos_class([full(), container("init", requests={"cpu": "1"})]) is B
    assert compute_qos_class([full(), container("init")]) is B


def test_init_container_with_equal_limits_keeps_a_pod_guaranteed() -> None:
    assert compute_qos_class([full(), full("2", "2Gi")]) is G


def test_zero_cpu_limit_is_not_a_limit_for_guaranteed() -> None:
    # Kubernetes only counts limits greater than zero: this container limits memory, not CPU.
    assert compute_qos_class([container(limits={"cpu": "0", "memory": "1Gi"})]) is B


@pytest.mark.parametrize(
    "resources",
    [{"nvidia.com/gpu": "1"}, {"ephemeral-storage": "1Gi"}],
    ids=["extended-resource", "ephemeral-storage"],
)
def test_only_cpu_and_memory_decide_best_effort(resources: dict[str, str]) -> None:
    assert compute_qos_class([container(requests=resources, limits=resources)]) is BE


_full_containers = st.lists(
    st.tuples(st.integers(1, 64_000), st.integers(1, 1 << 16)), min_size=1, max_size=5
)


@given(_full_containers, st.booleans())
def test_requests_equal_to_limits_in_any_spelling_are_guaranteed(
    sizes: list[tuple[int, int]], omit_requests: bool
) -> None:
    containers = []
    for millis, mebibytes in sizes:
        limits = {"cpu": f"{millis}m", "memory": f"{mebibytes}Mi"}
        requests = None if omit_requests else {"cpu": str(millis / 1000), "memory": mebibytes << 20}
        containers.append(container(requests=requests, limits=limits))
    assert compute_qos_class(containers) is G


@given(_full_containers, st.data())
def test_lowering_one_request_makes_a_guaranteed_pod_burstable(
    sizes: list[tuple[int, int]], data: st.DataObject
) -> None:
    containers = [full(f"{m}m", f"{mi}Mi") for m, mi in sizes]
    index = data.draw(st.integers(0, len(containers) - 1))
    resource = data.draw(st.sampled_from(["cpu", "memory"]))
    millis, mebibytes = sizes[index]
    lower = f"{millis - 1}m" if resource == "cpu" else f"{(mebibytes << 10) - 1}Ki"
    containers[index]["resources"]["requests"][resource] = lower
    assert compute_qos_class(containers) is B


@given(st.permutations([full(), container("b", requests={"cpu": "1"}), container("c")]))
def test_qos_class_does_not_depend_on_container_order(containers: list[dict[str, Any]]) -> None:
    assert compute_qos_class(containers) is B


# --- parse_pod: fields -------------------------------------------------------------------------


def test_parse_pod_reads_identity_and_scheduling_fields() -> None:
    obj = pod_obj(priorityClassName="temper-high", priority=100_000, nodeName="node-a")
    obj["metadata"]["labels"] = {"app": "checkout"}
    pod = parse_pod(obj, "items[0]")
    assert pod == Pod(
        uid="0b1c2d3e-0000-4000-8000-000000000001",
        namespace="shop",
        name="web",
        qos=BE,
        cpu_request_millis=0,
        cpu_limit_millis=None,
        priority_class="temper-high",
        priority=100_000,
        node_name="node-a",
        phase="Running",
    )
    assert pod.labels == {"app": "checkout"}
    assert pod.key == "shop/web"
    assert pod.cgroup_uid == pod.uid


def test_namespace_defaults_to_default_and_phase_to_pending() -> None:
    obj = pod_obj(namespace=None)
    del obj["status"]
    pod = parse_pod(obj, "items[0]")
    assert pod.namespace == "default"
    assert pod.key == "default/web"
    assert pod.phase == "Pending"
    assert pod.priority is None
    assert pod.priority_class is None


def test_stated_qos_class_wins_over_the_computed_one() -> None:
    obj = pod_obj(containers=[full()])
    assert parse_pod(obj, "p").qos is G
    obj["status"]["qosClass"] = "Burstable"
    assert parse_pod(obj, "p").qos is B


def test_qos_class_is_computed_from_init_containers_too() -> None:
    obj = pod_obj(containers=[full()], init_containers=[container("init")])
    assert parse_pod(obj, "p").qos is B


def test_unknown_stated_qos_class_is_an_input_error() -> None:
    obj = pod_obj()
    obj["status"]["qosClass"] = "Gold"
    with pytest.raises(InputError, match=r"items\[4\].*status\.qosClass.*'Gold'"):
        parse_pod(obj, "items[4]")


@pytest.mark.parametrize(
    ("containers", "init_containers", "overhead", "expected"),
    [
        pytest.param(
            [container(requests={"cpu": "250m"}), container("b", requests={"cpu": "500m"})],
            None,
            None,
            750,
            id="sum-of-containers",
        ),
        pytest.param(
            [container(requests={"cpu": "250m"}), container("b", requests={"cpu": "500m"})],
            [container("i1", requests={"cpu": "1"}), container("i2", requests={"cpu": "200m"})],
            None,
            1000,
            id="largest-init-wins",
        ),
        pytest.param(
            [container(requests={"cpu": "2"})],
            [container("i1", requests={"cpu": "1"})],
            None,
            2000,
            id="sum-wins-over-init",
        ),
        pytest.param(
            [container(requests={"cpu": "250m"})],
            [container("i1", requests={"cpu": "1"})],
            {"cpu": "100m"},
            1100,
            id="overhead-added-to-the-max",
        ),
        pytest.param(
            [container(requests={"cpu": "250m"})],
            None,
            {"memory": "10Mi"},
            250,
            id="no-cpu-overhead",
        ),
        pytest.param(
            [container(limits={"cpu": "1500m"}), container("b")],
            None,
            None,
            1500,
            id="request-defaults-to-limit",
        ),
        pytest.param([container(requests={"cpu": "0.0001"})], None, None, 1, id="rounded-up"),
        pytest.param([container()], None, None, 0, id="nothing-requested"),
    ],
)
def test_pod_cpu_request(
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]] | None,
    overhead: dict[str, str] | None,
    expected: int,
) -> None:
    extra = {} if overhead is None else {"overhead": overhead}
    obj = pod_obj(containers=containers, init_containers=init_containers, **extra)
    assert parse_pod(obj, "p").cpu_request_millis == expected


@pytest.mark.parametrize(
    ("containers", "init_containers", "expected"),
    [
        pytest.param(
            [container(limits={"cpu": "1"}), container("b", limits={"cpu": "250m"})],
            None,
            1250,
            id="sum-of-limits",
        ),
        pytest.param(
            [container(limits={"cpu": "1"}), container("b", requests={"cpu": "250m"})],
            None,
            None,
            id="one-container-unlimited",
        ),
        pytest.param([container()], None, None, id="no-limits"),
        pytest.param([], None, None, id="no-containers"),
        pytest.param(
            [container(limits={"cpu": "1"})],
            [container("init", limits={"cpu": "3"})],
            3000,
            id="larger-init-limit",
        ),
        pytest.param(
            [container(limits={"cpu": "1"})],
            [container("init", limits={"cpu": "500m"})],
            1000,
            id="smaller-init-limit",
        ),
    ],
)
def test_pod_cpu_limit(
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]] | None,
    expected: int | None,
) -> None:
    obj = pod_obj(containers=containers, init_containers=init_containers)
    assert parse_pod(obj, "p").cpu_limit_millis == expected


def test_zero_cpu_limit_counts_as_no_limit() -> None:
    obj = pod_obj(containers=[container(limits={"cpu": "0"}), container("b", limits={"cpu": "1"})])
    assert parse_pod(obj, "p").cpu_limit_millis is None


def test_mirror_pod_takes_its_cgroup_uid_from_the_annotation() -> None:
    obj = pod_obj(uid="mirror-uid")
    obj["metadata"]["annotations"] = {MIRROR_ANNOTATION: "static-uid", "other": "x"}
    pod = parse_pod(obj, "p")
    assert pod.uid == "mirror-uid"
    assert pod.cgroup_uid == "static-uid"


def test_other_annotations_leave_the_cgroup_uid_alone() -> None:
    obj = pod_obj(uid="plain-uid")
    obj["metadata"]["annotations"] = {"kubernetes.io/config.source": "file"}
    assert parse_pod(obj, "p").cgroup_uid == "plain-uid"


@pytest.mark.parametrize(
    ("phase", "finished"),
    [
        ("Succeeded", True),
        ("Failed", True),
        ("Running", False),
        ("Pending", False),
        ("Unknown", False),
    ],
)
def test_finished_phases(phase: str, finished: bool) -> None:
    obj = pod_obj()
    obj["status"]["phase"] = phase
    pod = parse_pod(obj, "p")
    assert pod.phase == phase
    assert pod.finished is finished


# --- parse_pod: errors -------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(*path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(*path: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        target = obj
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _bad_request(obj: dict[str, Any]) -> None:
    obj["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "abc"}}


@pytest.mark.parametrize(
    ("mutate", "fields"),
    [
        pytest.param(_delete("metadata", "uid"), ("metadata.uid", "missing"), id="no-uid"),
        pytest.param(
            _set("metadata", "uid", value=""), ("metadata.uid", "missing"), id="empty-uid"
        ),
        pytest.param(_delete("metadata", "name"), ("metadata.name", "missing"), id="no-name"),
        pytest.param(_set("metadata", "name", value=7), ("metadata.name", "int"), id="name-int"),
        pytest.param(_set("metadata", value=["x"]), ("metadata",), id="metadata-list"),
        pytest.param(_set("spec", value="x"), ("spec", "str"), id="spec-string"),
        pytest.param(_set("status", value=3), ("status", "int"), id="status-int"),
        pytest.param(
            _set("spec", "priority", value="high"), ("spec.priority", "'high'"), id="prio-str"
        ),
        pytest.param(_set("spec", "priority", value=True), ("spec.priority",), id="prio-bool"),
        pytest.param(_set("spec", "priority", value=1.5), ("spec.priority",), id="prio-float"),
        pytest.param(
            _set("metadata", "labels", value={"app": 1}), ("metadata.labels",), id="label-value"
        ),
        pytest.param(
            _set("metadata", "labels", value=["app"]), ("metadata.labels",), id="labels-list"
        ),
        pytest.param(
            _set("metadata", "annotations", value={"a": None}),
            ("metadata.annotations",),
            id="annotation-value",
        ),
        pytest.param(
            _set("spec", "containers", value={"name": "app"}),
            ("spec.containers",),
            id="containers-map",
        ),
        pytest.param(
            _set("spec", "containers", value=["app"]), ("spec.containers",), id="container-str"
        ),
        pytest.param(
            _set("spec", "initContainers", value="x"), ("spec.initContainers",), id="init-str"
        ),
        pytest.param(
            _set("spec", "priorityClassName", value=5), ("spec.priorityClassName",), id="class-int"
        ),
        pytest.param(_set("spec", "nodeName", value=["n"]), ("spec.nodeName",), id="node-list"),
        pytest.param(_set("status", "phase", value=1), ("status.phase",), id="phase-int"),
        pytest.param(_bad_request, ("'abc'", "quantity"), id="bad-quantity"),
        pytest.param(
            _set("spec", "containers", value=[{"name": "app", "resources": "1"}]),
            ("'app'", "resources"),
            id="resources-str",
        ),
        pytest.param(
            _set("spec", "containers", value=[{"name": "app", "resources": {"limits": [1]}}]),
            ("'app'", "limits"),
            id="limits-list",
        ),
        pytest.param(
            _set("spec", "overhead", value={"cpu": "lots"}), ("'lots'",), id="bad-overhead"
        ),
    ],
)
def test_malformed_pod_raises_input_error_with_position_and_field(
    mutate: Mutation, fields: tuple[str, ...]
) -> None:
    items = [pod_obj(f"pod-{i}", uid=f"uid-{i}") for i in range(3)]
    mutate(items[2])
    with pytest.raises(InputError) as caught:
        parse_pod_list({"kind": "PodList", "items": items})
    message = str(caught.value)
    assert "items[2]" in message
    for field in fields:
        assert field in message


def test_error_after_the_name_is_known_names_the_pod() -> None:
    obj = pod_obj("api", namespace="shop")
    obj["spec"]["priority"] = "high"
    with pytest.raises(InputError, match=r"^items\[0\] \(shop/api\)\.spec\.priority"):
        parse_pod(obj, "items[0]")


def test_non_mapping_item_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"items\[1\]: expected a Pod object, got str"):
        parse_pod_list({"kind": "PodList", "items": [pod_obj(), "nope"]})


def test_bad_quantity_message_names_the_container_and_resource() -> None:
    obj = pod_obj(containers=[container("sidecar", limits={"memory": "lots"})])
    with pytest.raises(InputError) as caught:
        parse_pod(obj, "items[0]")
    assert "sidecar" in str(caught.value)
    assert "memory" in str(caught.value)


# --- parse_pod_list ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["PodList", "List", None])
def test_parse_pod_list_reads_items_in_order(kind: str | None) -> None:
    document: dict[str, Any] = {"items": [pod_obj("a", uid="u-a"), pod_obj("b", uid="u-b")]}
    if kind is not None:
        document["kind"] = kind
    pods = parse_pod_list(document)
    assert [(p.name, p.uid) for p in pods] == [("a", "u-a"), ("b", "u-b")]


def test_parse_pod_list_of_no_items_is_empty() -> None:
    assert parse_pod_list({"kind": "PodList", "items": []}) == ()


def test_single_pod_object_is_a_list_of_one() -> None:
    pods = parse_pod_list(pod_obj("solo", uid="u-solo"))
    assert len(pods) == 1
    assert pods[0].name == "solo"
    assert pods[0].uid == "u-solo"


def test_single_pod_errors_are_positioned_at_pod() -> None:
    obj = pod_obj()
    del obj["metadata"]["uid"]
    with pytest.raises(InputError, match=r"^pod \(shop/web\)\.metadata\.uid: missing"):
        parse_pod_list(obj)


@pytest.mark.parametrize(
    ("document", "kind"),
    [([], "list"), (None, "null"), ("pods", "str"), (3, "int")],
)
def test_non_mapping_document_is_an_input_error(document: object, kind: str) -> None:
    with pytest.raises(InputError, match=f"expected a PodList object.*got {kind}$"):
        parse_pod_list(document)


@pytest.mark.parametrize(
    "document",
    [{"kind": "PodList"}, {"kind": "List", "items": None}, {"items": {"a": 1}}, {"items": "x"}],
)
def test_missing_or_malformed_items_is_an_input_error(document: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="'items' list"):
        parse_pod_list(document)


def test_parse_pod_does_not_modify_its_input() -> None:
    obj = pod_obj(containers=[container(limits={"cpu": "1"})], overhead={"cpu": "10m"})
    before = copy.deepcopy(obj)
    parse_pod(obj, "p")
    assert obj == before
