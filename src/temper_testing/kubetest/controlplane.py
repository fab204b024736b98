"""A real control plane on 127.0.0.1 for tests and benchmarks: etcd and kube-apiserver.

`ControlPlane.start(workdir)` starts Debian's etcd and the kube-apiserver that
`scripts/install-control-plane` put in the cache, the way envtest does (controller-runtime,
`pkg/internal/testing/controlplane/`): client-certificate authentication against a throw-away CA,
RBAC, service-account tokens signed by a key made here, no admission plugins that need controllers
we do not run. It returns once `/readyz` answers. The admin identity (group `system:masters`) is in
`kubeconfig` and behind `request`; `kubeconfig_for_token` makes a kubeconfig for another identity.

Faults the tests need from the real parts: `stop_apiserver`/`start_apiserver` (an outage, same
port, same data) and `compact` (etcd forgets old revisions, so a watch from an old
resourceVersion gets 410 Gone).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from temper_testing.checkout import repo_root
from temper_testing.kubetest.tinyca import TinyCA

READY_TIMEOUT_S = 90.0


# The agent's identity as the chart installs it: release `temper` in namespace `temper-system`.
AGENT_USER = "system:serviceaccount:temper-system:temper-agent"
NODE_CLAIM = "authentication.kubernetes.io/node-name"

# A webhook authorizer whose endpoint does not exist, with failurePolicy Deny, asked only when
# its match conditions hold: a deny rule in CEL. It denies the agent any list or watch of pods
# not selected by its own node's name; everything else falls through to RBAC.
AUTHORIZATION_CONFIG = f"""\
apiVersion: apiserver.config.k8s.io/v1
kind: AuthorizationConfiguration
authorizers:
  - type: Webhook
    name: temper-pods-of-own-node
    webhook:
      timeout: 1s
      subjectAccessReviewVersion: v1
      matchConditionSubjectAccessReviewVersion: v1
      failurePolicy: Deny
      authorizedTTL: 1s
      unauthorizedTTL: 1s
      connectionInfo:
        type: KubeConfigFile
        kubeConfigFile: "@KUBECONFIG@"
      matchConditions:
        - expression: request.user == '@AGENT@'
        - expression: >-
            has(request.resourceAttributes) && request.resourceAttributes.resource == 'pods'
            && request.resourceAttributes.verb in ['list', 'watch']
        - expression: >-
            !(has(request.extra) && '{NODE_CLAIM}' in request.extra
            && has(request.resourceAttributes.fieldSelector)
            && has(request.resourceAttributes.fieldSelector.requirements)
            && request.resourceAttributes.fieldSelector.requirements.exists(r,
                 r.key == 'spec.nodeName' && r.operator == 'In'
                 && r.values == request.extra['{NODE_CLAIM}']))
  - type: RBAC
    name: rbac
"""


class ControlPlaneError(RuntimeError):
    """The control plane cannot be started or did not answer."""


@dataclass(frozen=True)
class Binaries:
    apiserver: Path
    etcd: Path
    helm: Path

    @classmethod
    def from_cache(cls) -> Binaries:
        """Where scripts/install-control-plane keeps them; ControlPlaneError when missing."""
        script = repo_root() / "scripts" / "install-control-plane"
        lines = subprocess.run(
            [str(script), "--path"], capture_output=True, text=True, check=True
        ).stdout.split()
        binaries = cls(*(Path(line) for line in lines))
        missing = [str(p) for p in (binaries.apiserver, binaries.etcd) if not p.exists()]
        if missing:
            raise ControlPlaneError(
                f"not built: {', '.join(missing)}; run `make control-plane` first"
            )
        return binaries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ControlPlane:
    workdir: Path
    binaries: Binaries
    port: int = field(default_factory=free_port)
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    ca: TinyCA = field(default_factory=TinyCA)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def start(cls, workdir: Path, binaries: Binaries | None = None) -> ControlPlane:
        plane = cls(workdir, binaries or Binaries.from_cache())
        try:
            plane._write_credentials()
            plane._start_etcd()
            plane.start_apiserver()
        except BaseException:
            plane.stop()
            raise
        return plane

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    # -- processes ----------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd"
        shutil.rmtree(data, ignore_errors=True)
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                f"--data-dir={data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: self._etcd("/health").get("health") == "true")

    def start_apiserver(self) -> None:
        certs = self.workdir / "certs"
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'serving.crt'}",
                f"--tls-private-key-file={certs / 'serving.key'}",
                f"--client-ca-file={certs / 'ca.crt'}",
                f"--secure-port={self.port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                f"--authorization-config={self._write_authorization()}",
                "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
                f"--service-account-issuer={self.server}/",
                f"--service-account-key-file={certs / 'sa.pub'}",
                f"--service-account-signing-key-file={certs / 'sa.key'}",
                "--enable-priority-and-fairness=false",
                "--v=0",
            ],
        )
        self._wait("kube-apiserver", lambda: self.request("GET", "/readyz", raw=True)[0] == 200)

    def _write_authorization(self) -> Path:
        """RBAC, after one rule RBAC cannot express: the agent lists and watches pods only
        with `spec.nodeName=<the node in its token>` (docs/cluster.md, "Least privilege")."""
        nowhere = self.workdir / "deny.kubeconfig"
        nowhere.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "deny",
                            "cluster": {
                                "server": "https://127.0.0.1:1",
                                "insecure-skip-tls-verify": True,
                            },
                        }
                    ],
                    "users": [{"name": "deny", "user": {}}],
                    "contexts": [{"name": "deny", "context": {"cluster": "deny", "user": "deny"}}],
                    "current-context": "deny",
                }
            )
        )
        path = self.workdir / "authorization.yaml"
        config = AUTHORIZATION_CONFIG.replace("@AGENT@", AGENT_USER).replace(
            "@KUBECONFIG@", str(nowhere)
        )
        path.write_text(config)
        return path

    def stop_apiserver(self) -> None:
        self._terminate("kube-apiserver")

    def stop(self) -> None:
        for name in ("kube-apiserver", "etcd"):
            self._terminate(name)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()

    def _terminate(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def _wait(self, name: str, ready: Any) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {process.returncode}: {self._tail(name)}"
                )
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                if ready():
                    return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} not ready in {READY_TIMEOUT_S:.0f} s: {self._tail(name)}")

    def _tail(self, name: str) -> str:
        lines = (self.workdir / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-20:])

    # -- etcd ---------------------------------------------------------------------------------

    def _etcd(self, path: str, body: object | None = None) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=10)
        try:
            conn.request(
                "GET" if body is None else "POST", path, json.dumps(body) if body else None
            )
            result: dict[str, Any] = json.loads(conn.getresponse().read())
            return result
        finally:
            conn.close()

    def compact(self) -> int:
        """Compact etcd at its current revision; watches from older resourceVersions get 410."""
        key = base64.b64encode(b"/").decode()
        revision = int(self._etcd("/v3/kv/range", {"key": key})["header"]["revision"])
        self._etcd("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    # -- credentials --------------------------------------------------------------------------

    def _write_credentials(self) -> None:
        certs = self.workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        (certs / "ca.crt").write_bytes(self.ca.cert_pem)
        self.ca.issue(certs / "serving", "127.0.0.1", hosts=("127.0.0.1", "localhost"))
        self.ca.issue(certs / "admin", "admin", groups=("system:masters",))
        self.ca.key_pair(certs / "sa")
        user = {
            "client-certificate-data": _b64((certs / "admin.crt").read_bytes()),
            "client-key-data": _b64((certs / "admin.key").read_bytes()),
        }
        self.kubeconfig.write_text(yaml.safe_dump(self._kubeconfig_dict("admin", user)))

    def kubeconfig_for_token(self, name: str, token: str) -> Path:
        """A kubeconfig file for the identity behind a bearer token."""
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(self._kubeconfig_dict(name, {"token": token})))
        return path

    def _kubeconfig_dict(self, name: str, user: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca.cert_pem),
                    },
                }
            ],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
            "current-context": name,
        }

    # -- requests -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        token: str | None = None,
        raw: bool = False,
    ) -> tuple[int, Any]:
        """One API request as admin (or as the bearer of `token`): (HTTP status, JSON body)."""
        context = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        headers = {"Accept": "application/json"}
        if token is None:
            certs = self.workdir / "certs"
            context.load_cert_chain(certs / "admin.crt", certs / "admin.key")
        else:
            headers["Authorization"] = f"Bearer {token}"
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=context)
        try:
            conn.request(method, path, data, headers)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        if raw:
            return response.status, payload
        try:
            return response.status, json.loads(payload) if payload else None
        except ValueError:
            return response.status, payload.decode(errors="replace")

    def ok(self, method: str, path: str, body: object | None = None, **kwargs: Any) -> Any:
        """`request` that raises unless the API answered 2xx; returns the body."""
        status, result = self.request(method, path, body, **kwargs)
        if not 200 <= status < 300:
            raise ControlPlaneError(f"{method} {path}: {status} {result}")
        return result


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
