"""The Helm chart in charts/temper: linted, rendered, and sent to a real API server.

Each check catches what the one before cannot. `helm lint --strict` and the values schema catch
template errors, typos and wrong types. The rendered objects, read back as data, pin the fields
that carry the agent's security and scheduling contract: privilege, host mounts, the exact RBAC
rules, the own-Node admission policy, and the PriorityClass values the tier bands are built
around. A server-side dry run against the real API server then applies its schemas, defaulting
and the CEL type check of the admission policy; a last test installs the RBAC and the policy for
real and shows the policy denying a patch to another Node.

`helm` is the pinned Helm that `make control-plane` builds (scripts/install-control-plane); when
it is missing the tests fail with that instruction, never skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from temper.agent.config import AgentConfig, parse_config
from temper.policy.tiers import RECOMMENDED_PRIORITY_CLASSES
from temper_testing.kubetest.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "temper"
KUBE_VERSION = (ROOT / "versions" / "kubernetes").read_text().strip()
RELEASE = "temper"
NAMESPACE = "temper-chart-test"
AGENT = "temper-agent"  # the agent objects' name for release "temper"
AGENT_USER = f"system:serviceaccount:{NAMESPACE}:{AGENT}"
# The tests against the API server install as another release, so that the names of their
# cluster-wide objects differ from the ones the rest of the tier installs as release "temper".
API_RELEASE = "chart-test"
API_AGENT = "chart-test-temper-agent"
FIELD_MANAGER = "temper-chart-test"
SCHEMA_ERROR = "values don't meet the specifications of the schema"
POLICY_MESSAGE = "may change only the Node it runs on"
TLS_SECRET_MESSAGE = "api.tls.secretName must name a kubernetes.io/tls Secret"
TLS_DIR = "/etc/temper/api-tls"
# The agent's API over TCP with mutual TLS, served from a Secret of the kind cert-manager writes.
API_TLS = ("api.tls.enabled=true", "api.tls.secretName=agent-tls", "api.tls.port=9500")
# Seconds the API server may take to start enforcing a newly created admission policy.
POLICY_SYNC_S = 30.0

# The chart's kinds: URL plural, and whether the object lives in a namespace. A kind the chart
# adds without an entry here fails the dry-run test, so the table keeps up with the chart.
KINDS: dict[str, tuple[str, bool]] = {
    "ServiceAccount": ("serviceaccounts", True),
    "DaemonSet": ("daemonsets", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "ValidatingAdmissionPolicy": ("validatingadmissionpolicies", False),
    "ValidatingAdmissionPolicyBinding": ("validatingadmissionpolicybindings", False),
    "PriorityClass": ("priorityclasses", False),
}

Manifest = dict[str, Any]


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned Helm binary, built by `make control-plane`."""
    script = ROOT / "scripts" / "install-control-plane"
    lines = subprocess.run(
        [str(script), "--path"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    path = Path(lines[2])
    if not os.access(path, os.X_OK):
        pytest.fail(f"helm not found at {path}: run `make control-plane` first", pytrace=False)
    return path


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)


def helm_template(
    helm: Path, *values: str, release: str = RELEASE, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart in NAMESPACE, with `--set` for each of `values`."""
    sets = [arg for value in values for arg in ("--set", value)]
    return run_helm(
        helm,
        "template",
        release,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *sets,
        *flags,
    )


def render(helm: Path, *values: str, release: str = RELEASE) -> list[Manifest]:
    """The chart's objects, rendered with `values` and parsed."""
    result = helm_template(helm, *values, release=release)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Manifest], kind: str) -> Manifest:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def agent_container(objects: list[Manifest]) -> Manifest:
    containers = one(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["agent"]
    container: Manifest = containers[0]
    return container


def flags_of(container: Manifest) -> dict[str, str]:
    """The agent's command line after the program name, as flag -> value."""
    command = container["command"]
    assert command[0] == "temper-agent"
    return dict(zip(command[1::2], command[2::2], strict=True))


def agent_config(container: Manifest) -> AgentConfig:
    """The agent's settings, parsed from the rendered command line as the agent would."""
    argv = [arg.replace("$(NODE_NAME)", "node-a") for arg in container["command"][1:]]
    return parse_config(argv, {})


def mounts_and_volumes(objects: list[Manifest]) -> tuple[dict[str, Manifest], dict[str, Manifest]]:
    """The agent's volume mounts by mount path, and the pod's volumes by name."""
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    mounts = {mount["mountPath"]: mount for mount in agent_container(objects)["volumeMounts"]}
    return mounts, {volume["name"]: volume for volume in pod["volumes"]}


def object_path(obj: Manifest) -> str:
    """The URL path of one object, e.g. /apis/apps/v1/namespaces/ns/daemonsets/name."""
    plural, namespaced = KINDS[obj["kind"]]
    api_version = obj["apiVersion"]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    scope = f"/namespaces/{obj['metadata']['namespace']}" if namespaced else ""
    return f"{base}{scope}/{plural}/{obj['metadata']['name']}"


# -- lint and schema ----------------------------------------------------------------------------


def test_lint_strict_passes(helm: Path) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "bad_value",
    [
        "health.port=notanumber",
        "health.port=70000",
        "bogus=1",
        "agent.cgroupDriver=cgroupv3",
        "agent.stateDir=relative/path",
        "updateStrategy.maxUnavailable=0",
        "image.pullPolicy=Sometimes",
        "image.digest=latest",
        "image.digest=sha256:1234",
        "observe.port=0",
        "observe.sampleBudgetPerS=0",
        "observe.listenAddress=my host",
        "api.tls.port=0",
        "api.tls.port=65536",
        "api.group=",
        "api.dataDir=var/lib/temper",
        "api.tls.enabled=true",  # without a secretName
    ],
)
def test_schema_rejects_bad_values(helm: Path, bad_value: str) -> None:
    lint = run_helm(
        helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, "--set", bad_value
    )
    template = helm_template(helm, bad_value)
    for command, result in (("lint", lint), ("template", template)):
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"helm {command} accepted {bad_value}"
        assert SCHEMA_ERROR in output, output


# -- rendered objects ---------------------------------------------------------------------------


def test_renders_only_known_kinds_with_common_labels(helm: Path) -> None:
    objects = render(helm)
    assert {obj["kind"] for obj in objects} == set(KINDS)
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "temper"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if KINDS[obj["kind"]][1]:
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_daemonset_runs_privileged_on_every_node(helm: Path) -> None:
    daemonset = one(render(helm), "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    container = agent_container([daemonset])
    assert container["securityContext"]["privileged"] is True
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork", False)
    assert pod["serviceAccountName"] == AGENT
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert daemonset["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    assert container["image"] == "temper-agent:0.1.0"
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"memory": "256Mi"},
    }


def test_image_digest_pins_the_image_and_overrides_the_tag(helm: Path) -> None:
    digest = "sha256:" + "ab" * 32
    pinned = agent_container(render(helm, "image.digest=" + digest, "image.tag=other"))
    assert pinned["image"] == f"temper-agent@{digest}"


def test_agent_command_and_node_name(helm: Path) -> None:
    container = agent_container(render(helm, "agent.scxLayeredPath=/opt/scx/scx_layered"))
    assert flags_of(container) == {
        "--node-name": "$(NODE_NAME)",
        "--state-dir": "/run/temper",
        "--host-root": "/",
        "--scx-layered": "/opt/scx/scx_layered",
        "--cgroup-driver": "systemd",
        "--health-port": "9469",
        "--listen": "0.0.0.0:9479",
        "--sample-budget-per-s": "200",
        "--data-dir": "/var/lib/temper",
        "--api-group": "temper",
    }
    env = {item["name"]: item for item in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_agent_accepts_its_command_line(helm: Path) -> None:
    """The flags the chart passes are ones the agent parses, to the values the chart meant."""
    config = agent_config(agent_container(render(helm)))
    assert config.node_name == "node-a"
    assert config.state_dir == Path("/run/temper")
    assert config.host_root == Path("/")
    assert config.scx_layered == Path("/usr/local/bin/scx_layered")
    assert config.health_port == 9469
    assert config.listen == ("0.0.0.0", 9479)
    assert config.sample_budget_per_s == 200
    assert config.data_dir == Path("/var/lib/temper")
    assert config.api_enabled is True
    assert config.api_socket is None  # the agent's default: <state-dir>/api.sock, on the host
    assert config.api_group == "temper"
    assert config.api_listen is None


def test_host_mounts(helm: Path) -> None:
    mounts, volumes = mounts_and_volumes(render(helm))
    expected = {
        "/sys": {"path": "/sys", "type": "Directory"},
        "/sys/fs/cgroup": {"path": "/sys/fs/cgroup", "type": "Directory"},
        "/run/temper": {"path": "/run/temper", "type": "DirectoryOrCreate"},
        "/var/lib/temper": {"path": "/var/lib/temper", "type": "DirectoryOrCreate"},
        "/etc/group": {"path": "/etc/group", "type": "File"},
    }
    for mount_path, host_path in expected.items():
        assert volumes[mounts[mount_path]["name"]]["hostPath"] == host_path
    for read_only in ("/sys/fs/cgroup", "/etc/group"):
        assert mounts[read_only]["readOnly"] is True
    for writable in ("/run/temper", "/var/lib/temper"):
        assert not mounts[writable].get("readOnly", False)


# -- the API for temper-cli ---------------------------------------------------------------------


def test_api_defaults_to_the_socket_only(helm: Path) -> None:
    """The socket lands in the hostPath state dir; assignments and audit log on the host's disk."""
    objects = render(helm, "api.dataDir=/data/temper")
    container = agent_container(objects)
    flags = flags_of(container)
    assert flags["--data-dir"] == "/data/temper"
    assert flags["--api-group"] == "temper"
    assert not {"--api-socket", "--api-listen", "--api-tls-cert"} & flags.keys()
    assert [port["name"] for port in container["ports"]] == ["health", "metrics"]
    mounts, volumes = mounts_and_volumes(objects)
    data = volumes[mounts["/data/temper"]["name"]]
    assert data["hostPath"] == {"path": "/data/temper", "type": "DirectoryOrCreate"}
    assert TLS_DIR not in mounts


def test_api_disabled(helm: Path) -> None:
    objects = render(helm, "api.enabled=false", *API_TLS)
    container = agent_container(objects)
    flags = flags_of(container)
    assert flags["--api-socket"] == "off"
    assert not {"--api-group", "--api-listen"} & flags.keys()
    # The agent still reads the operator's assignments at start: they stay in force.
    assert flags["--data-dir"] == "/var/lib/temper"
    mounts, _ = mounts_and_volumes(objects)
    assert "/var/lib/temper" in mounts
    assert not {"/etc/group", TLS_DIR} & mounts.keys()
    assert "api" not in [port["name"] for port in container["ports"]]
    config = agent_config(container)
    assert config.api_enabled is False
    assert config.api_listen is None


@pytest.mark.parametrize(("group", "expected"), [("1500", "1500"), ("none", None)])
def test_api_group_by_number_or_root_only(helm: Path, group: str, expected: str | None) -> None:
    """Only a group name needs the host's /etc/group; a GID or "none" is taken as it is."""
    objects = render(helm, f"api.group={group}")
    container = agent_container(objects)
    assert flags_of(container)["--api-group"] == group
    assert agent_config(container).api_group == expected
    assert "/etc/group" not in mounts_and_volumes(objects)[0]


def test_api_tls(helm: Path) -> None:
    objects = render(helm, *API_TLS)
    container = agent_container(objects)
    flags = flags_of(container)
    assert flags["--api-listen"] == "0.0.0.0:9500"
    assert flags["--api-tls-cert"] == f"{TLS_DIR}/tls.crt"
    assert flags["--api-tls-key"] == f"{TLS_DIR}/tls.key"
    assert flags["--api-client-ca"] == f"{TLS_DIR}/ca.crt"
    assert {"name": "api", "containerPort": 9500, "protocol": "TCP"} in container["ports"]
    mounts, volumes = mounts_and_volumes(objects)
    assert mounts[TLS_DIR]["readOnly"] is True
    secret = volumes[mounts[TLS_DIR]["name"]]["secret"]
    assert secret["secretName"] == "agent-tls"
    assert secret["defaultMode"] == 0o400
    assert [item["key"] for item in secret["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    assert all(item["path"] == item["key"] for item in secret["items"])
    config = agent_config(container)
    assert config.api_listen == ("0.0.0.0", 9500)
    assert config.api_tls_cert == Path(TLS_DIR, "tls.crt")
    assert config.api_tls_key == Path(TLS_DIR, "tls.key")
    assert config.api_client_ca == Path(TLS_DIR, "ca.crt")


def test_api_tls_without_secret_fails(helm: Path) -> None:
    """The schema refuses it; with the schema skipped, the template still does, by name."""
    checked = helm_template(helm, "api.tls.enabled=true")
    assert checked.returncode != 0
    assert SCHEMA_ERROR in checked.stderr
    unchecked = helm_template(helm, "api.tls.enabled=true", flags=("--skip-schema-validation",))
    assert unchecked.returncode != 0
    assert TLS_SECRET_MESSAGE in unchecked.stderr


def test_probes_use_the_health_port(helm: Path) -> None:
    container = agent_container(render(helm, "health.port=9100"))
    assert container["ports"][0] == {"name": "health", "containerPort": 9100, "protocol": "TCP"}
    probes = {name: container[name]["httpGet"] for name in ("livenessProbe", "readinessProbe")}
    assert probes == {
        "livenessProbe": {"path": "/livez", "port": "health"},
        "readinessProbe": {"path": "/readyz", "port": "health"},
    }
    command = container["command"]
    assert command[command.index("--health-port") + 1] == "9100"


def test_cluster_role_is_least_privilege(helm: Path) -> None:
    role = one(render(helm), "ClusterRole")
    rules = {
        (tuple(rule["apiGroups"]), tuple(rule["resources"])): sorted(rule["verbs"])
        for rule in role["rules"]
    }
    assert len(rules) == len(role["rules"])
    assert rules == {
        (("",), ("pods",)): ["list", "watch"],
        (("",), ("nodes",)): ["get", "patch", "watch"],
        (("",), ("events",)): ["create"],
    }
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert "resourceNames" not in rule
        assert "nonResourceURLs" not in rule


def test_cluster_role_binding_names_the_agent(helm: Path) -> None:
    objects = render(helm)
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": AGENT, "namespace": NAMESPACE}
    ]
    assert one(objects, "ServiceAccount")["metadata"]["name"] == AGENT


def test_priority_classes_match_the_tier_bands(helm: Path) -> None:
    classes = of_kind(render(helm), "PriorityClass")
    rendered = {pc["metadata"]["name"]: pc["value"] for pc in classes}
    expected = {
        name: value
        for name, value in RECOMMENDED_PRIORITY_CLASSES.items()
        if name.startswith("temper-")
    }
    assert rendered == expected
    preemption = {pc["metadata"]["name"]: pc["preemptionPolicy"] for pc in classes}
    assert {name for name, policy in preemption.items() if policy == "Never"} == {
        "temper-low",
        "temper-background",
    }
    for pc in classes:
        assert pc["globalDefault"] is False
        assert pc["description"]
        assert pc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_priority_classes_optional(helm: Path) -> None:
    assert not of_kind(render(helm, "priorityClasses.create=false"), "PriorityClass")
    kept = of_kind(render(helm, "priorityClasses.keepOnUninstall=false"), "PriorityClass")
    assert all("annotations" not in pc["metadata"] for pc in kept)


def test_own_node_policy(helm: Path) -> None:
    objects = render(helm)
    policy = one(objects, "ValidatingAdmissionPolicy")
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["UPDATE"],
            "resources": ["nodes", "nodes/status"],
        }
    ]
    [condition] = spec["matchConditions"]
    assert condition["expression"] == f"request.userInfo.username == '{AGENT_USER}'"
    [validation] = spec["validations"]
    claim = "request.userInfo.extra['authentication.kubernetes.io/node-name'][0]"
    assert f"object.metadata.name == {claim}" in validation["expression"]
    assert validation["message"]
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }


def test_own_node_policy_optional(helm: Path) -> None:
    objects = render(helm, "rbac.restrictToOwnNode=false")
    assert not of_kind(objects, "ValidatingAdmissionPolicy")
    assert not of_kind(objects, "ValidatingAdmissionPolicyBinding")
    assert of_kind(objects, "ClusterRole")


def test_existing_service_account(helm: Path) -> None:
    objects = render(helm, "serviceAccount.create=false", "serviceAccount.name=agent-sa")
    assert not of_kind(objects, "ServiceAccount")
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "agent-sa"
    policy = one(objects, "ValidatingAdmissionPolicy")
    username = f"system:serviceaccount:{NAMESPACE}:agent-sa"
    assert username in policy["spec"]["matchConditions"][0]["expression"]
    missing = helm_template(helm, "serviceAccount.create=false")
    assert missing.returncode != 0
    assert "serviceAccount.name must name an existing ServiceAccount" in missing.stderr


# -- the real API server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> str:
    """The release namespace, created for real, labelled for privileged pods."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
        },
    }
    status, result = control_plane.request("POST", "/api/v1/namespaces", body)
    assert status in (201, 409), result
    return NAMESPACE


def apply(control_plane: ControlPlane, obj: Manifest, *, dry_run: bool) -> tuple[int, Any]:
    """Server-side apply of one object as the chart test's field manager."""
    query = {"fieldManager": FIELD_MANAGER, "force": "true"}
    if dry_run:
        query["dryRun"] = "All"
    return control_plane.request(
        "PATCH",
        object_path(obj),
        obj,
        content_type="application/apply-patch+yaml",
        query=query,
    )


@pytest.mark.parametrize(
    "values",
    [(), ("rbac.restrictToOwnNode=false", "health.port=9100", "api.group=1500", *API_TLS)],
    ids=["default", "alt"],
)
def test_server_side_dry_run(
    helm: Path, control_plane: ControlPlane, namespace: str, values: tuple[str, ...]
) -> None:
    objects = render(helm, *values, release=API_RELEASE)
    assert objects
    for obj in objects:
        status, result = apply(control_plane, obj, dry_run=True)
        assert status in (200, 201), f"{obj['kind']} {obj['metadata']['name']}: {result}"
        assert result["kind"] == obj["kind"]
        assert result["metadata"]["name"] == obj["metadata"]["name"]
    # A dry run persists nothing.
    status, _ = control_plane.request("GET", object_path(one(objects, "DaemonSet")))
    assert status == 404


@pytest.fixture
def installed_rbac(
    helm: Path, control_plane: ControlPlane, namespace: str
) -> Iterator[list[Manifest]]:
    """The chart's ServiceAccount, RBAC and own-Node policy, applied for real, then removed."""
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    kinds |= {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    objects = [obj for obj in render(helm, release=API_RELEASE) if obj["kind"] in kinds]
    try:
        for obj in objects:
            status, result = apply(control_plane, obj, dry_run=False)
            assert status in (200, 201), result
        yield objects
    finally:
        for obj in reversed(objects):
            control_plane.request("DELETE", object_path(obj))


def make_node(control_plane: ControlPlane, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
    status, result = control_plane.request("POST", "/api/v1/nodes", body)
    assert status in (201, 409), result


def agent_token(control_plane: ControlPlane, node: str | None) -> str:
    """A token of the agent's ServiceAccount: bound to an agent pod on `node`, or unbound."""
    spec: dict[str, Any] = {"expirationSeconds": 600}
    if node is not None:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"agent-on-{node}", "namespace": NAMESPACE},
            "spec": {
                "serviceAccountName": API_AGENT,
                "nodeName": node,
                "containers": [{"name": "agent", "image": "temper-agent:0.1.0"}],
            },
        }
        created = control_plane.ok("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
        meta = created["metadata"]
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "uid": meta["uid"],
        }
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    path = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{API_AGENT}/token"
    token: str = control_plane.ok("POST", path, request)["status"]["token"]
    return token


def annotate_node(control_plane: ControlPlane, node: str, token: str) -> tuple[int, Any]:
    patch = {"metadata": {"annotations": {"temper.io/chart-test": "1"}}}
    return control_plane.request(
        "PATCH",
        f"/api/v1/nodes/{node}",
        patch,
        content_type="application/merge-patch+json",
        token=token,
    )


def denied_by_policy(response: tuple[int, Any]) -> bool:
    status, body = response
    return status == 403 and POLICY_MESSAGE in str(body.get("message", ""))


def test_own_node_policy_denies_other_nodes(
    control_plane: ControlPlane, installed_rbac: list[Manifest]
) -> None:
    own, other = "chart-test-node-a", "chart-test-node-b"
    for node in (own, other):
        make_node(control_plane, node)
    bound = agent_token(control_plane, own)
    unbound = agent_token(control_plane, None)
    try:
        # RBAC allows patching any Node; the policy, once the API server has loaded it, narrows
        # that to the token's own Node. Admission runs only after authorization allowed the
        # request, so the policy's denial also proves the RBAC rules took effect.
        deadline = time.monotonic() + POLICY_SYNC_S
        while not denied_by_policy(status := annotate_node(control_plane, other, bound)):
            assert time.monotonic() < deadline, f"the own-Node policy never denied: {status}"
            time.sleep(0.5)
        assert annotate_node(control_plane, own, bound)[0] == 200
        status = annotate_node(control_plane, own, unbound)
        assert denied_by_policy(status), status
    finally:
        control_plane.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/agent-on-{own}")
        for node in (own, other):
            control_plane.request("DELETE", f"/api/v1/nodes/{node}")


def test_metrics_port_and_scrape_annotations(helm: Path) -> None:
    objects = render(helm, "observe.port=9500", "observe.listenAddress=127.0.0.1")
    container = agent_container(objects)
    assert {"name": "metrics", "containerPort": 9500, "protocol": "TCP"} in container["ports"]
    command = container["command"]
    assert command[command.index("--listen") + 1] == "127.0.0.1:9500"
    annotations = one(objects, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9500",
        "prometheus.io/path": "/metrics",
    }
    quiet = one(render(helm, "observe.scrapeAnnotations=false"), "DaemonSet")
    assert "annotations" not in quiet["spec"]["template"]["metadata"]


def test_dashboards_ship_as_configmaps_only_when_asked(helm: Path) -> None:
    assert not [o for o in render(helm) if o["kind"] == "ConfigMap"]
    maps = [o for o in render(helm, "dashboards.create=true") if o["kind"] == "ConfigMap"]
    committed = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert sorted(name for m in maps for name in m["data"]) == committed
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        for name, text in config_map["data"].items():
            assert json.loads(text) == json.loads((CHART / "dashboards" / name).read_text())
