"""The control-plane tier: a real etcd and kube-apiserver on 127.0.0.1 (docs/testing.md).

`control_plane` starts them once per session from the cache `make control-plane`
(scripts/install-control-plane) fills; when the binaries are missing the tier fails with that
instruction, it never skips. `cluster` gives each test a `Cluster`: admin calls for nodes and
pods, the chart's RBAC and PriorityClasses applied as the chart renders them, and a token for
the agent's service account bound to a pod on a node, as the kubelet would mount it.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from temper_testing.kubetest.controlplane import AGENT_USER, ControlPlane, ControlPlaneError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "temper"
AGENT_NAMESPACE, AGENT_SA = AGENT_USER.split(":")[2:]
_names = itertools.count()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    started = time.monotonic()
    try:
        plane = ControlPlane.start(tmp_path_factory.mktemp("control-plane"))
    except (ControlPlaneError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"cannot start the control plane: {exc}", pytrace=False)
    print(f"control plane up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    try:
        yield plane
    finally:
        plane.stop()


def render_chart(plane: ControlPlane, *values: str) -> list[dict[str, Any]]:
    """`helm template` of the chart as release `temper` in the agent's namespace."""
    argv = [str(plane.binaries.helm), "template", "temper", str(CHART)]
    argv += ["--namespace", AGENT_NAMESPACE]
    for value in values:
        argv += ["--set", value]
    rendered = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def object_path(obj: dict[str, Any]) -> str:
    """The API path of an object of the kinds the chart renders."""
    plural = {
        "ServiceAccount": "serviceaccounts",
        "ClusterRole": "clusterroles",
        "ClusterRoleBinding": "clusterrolebindings",
        "PriorityClass": "priorityclasses",
        "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
        "DaemonSet": "daemonsets",
        "Namespace": "namespaces",
    }[obj["kind"]]
    version = obj["apiVersion"]
    base = f"/api/{version}" if "/" not in version else f"/apis/{version}"
    namespace = obj["metadata"].get("namespace")
    if obj["kind"] in ("ServiceAccount", "DaemonSet"):
        namespace = namespace or AGENT_NAMESPACE
        return f"{base}/namespaces/{namespace}/{plural}/{obj['metadata']['name']}"
    return f"{base}/{plural}/{obj['metadata']['name']}"


def apply(plane: ControlPlane, obj: dict[str, Any], *, dry_run: bool = False) -> Any:
    query = {"fieldManager": "temper-tests", "force": "true"}
    if dry_run:
        query["dryRun"] = "All"
    return plane.ok(
        "PATCH", object_path(obj), obj, content_type="application/apply-patch+yaml", query=query
    )


class Cluster:
    """Admin-side helpers for one test; names are unique per session."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def ensure_namespace(self, name: str) -> None:
        status, body = self.plane.request(
            "POST", "/api/v1/namespaces", {"metadata": {"name": name}}
        )
        assert status in (201, 409), body

    def create_node(self, prefix: str = "node") -> str:
        name = f"{prefix}-{next(_names)}"
        self.plane.ok("POST", "/api/v1/nodes", {"metadata": {"name": name}})
        return name

    def create_pod(
        self,
        node: str,
        *,
        namespace: str = "work",
        priority_class: str | None = None,
        cpu_millis: int = 100,
        name: str | None = None,
        service_account: str | None = None,
    ) -> dict[str, Any]:
        self.ensure_namespace(namespace)
        spec: dict[str, Any] = {
            "nodeName": node,
            "containers": [
                {
                    "name": "app",
                    "image": "registry.invalid/app:1",
                    "resources": {"requests": {"cpu": f"{cpu_millis}m"}},
                }
            ],
        }
        if priority_class:
            spec["priorityClassName"] = priority_class
        if service_account:
            spec["serviceAccountName"] = service_account
        body = {"metadata": {"name": name or f"pod-{next(_names)}"}, "spec": spec}
        result: dict[str, Any] = self.plane.ok("POST", f"/api/v1/namespaces/{namespace}/pods", body)
        return result

    def delete_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.plane.ok(
            "DELETE",
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
            query={"gracePeriodSeconds": "0"},
        )

    def annotations(self, node: str) -> dict[str, str]:
        result: dict[str, str] = (
            self.plane.ok("GET", f"/api/v1/nodes/{node}")["metadata"].get("annotations") or {}
        )
        return result

    def annotate(self, node: str, key: str, value: str | None) -> None:
        self.plane.ok(
            "PATCH",
            f"/api/v1/nodes/{node}",
            {"metadata": {"annotations": {key: value}}},
            content_type="application/merge-patch+json",
        )

    def node_events(self, node: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.plane.ok(
            "GET",
            "/api/v1/namespaces/default/events",
            query={"fieldSelector": f"involvedObject.kind=Node,involvedObject.name={node}"},
        )["items"]
        return items

    def agent_token(self, node: str) -> str:
        """A token of the agent's service account bound to an agent pod on `node`: it carries
        the node-name claim, as the token the kubelet mounts does."""
        pod = self.create_pod(
            node,
            namespace=AGENT_NAMESPACE,
            name=f"agent-{node}",
            service_account=AGENT_SA,
            priority_class="system-node-critical",  # as the chart runs it
        )
        answer = self.plane.ok(
            "POST",
            f"/api/v1/namespaces/{AGENT_NAMESPACE}/serviceaccounts/{AGENT_SA}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "expirationSeconds": 3600,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": pod["metadata"]["name"],
                        "uid": pod["metadata"]["uid"],
                    },
                },
            },
        )
        token: str = answer["status"]["token"]
        return token

    def agent_kubeconfig(self, node: str) -> Path:
        return self.plane.kubeconfig_for_token(f"agent-{node}", self.agent_token(node))


@pytest.fixture(scope="session")
def chart_installed(control_plane: ControlPlane) -> None:
    """The chart's cluster-wide objects (RBAC, admission policy, PriorityClasses) applied."""
    Cluster(control_plane).ensure_namespace(AGENT_NAMESPACE)
    for obj in render_chart(control_plane):
        if obj["kind"] != "DaemonSet":
            apply(control_plane, obj)


@pytest.fixture
def cluster(control_plane: ControlPlane, chart_installed: None) -> Cluster:
    return Cluster(control_plane)


def tier_load(annotations: dict[str, str]) -> dict[str, Any] | None:
    text = annotations.get("temper.io/tier-load")
    return json.loads(text) if text else None
