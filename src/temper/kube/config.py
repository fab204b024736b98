"""Where the API server is and who we are to it: a kubeconfig file, or the pod's service account.

Supported, because that is what a node agent meets: in a pod, the service account's token and
CA (`/var/run/secrets/kubernetes.io/serviceaccount`) and `KUBERNETES_SERVICE_HOST`/`_PORT`,
the token re-read from its file on every request (the kubelet rotates it); from a kubeconfig,
the current context's server, CA (file or data), `insecure-skip-tls-verify`, client
certificate and key (file or data), `token` and `tokenFile`. Exec and auth-provider plugins are
refused with a clear error: they run other programs, which an agent on a node never needs.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(Exception):
    """The API configuration cannot be loaded; the message says what is wrong and where."""


@dataclass(frozen=True)
class ApiConfig:
    server: str  # https://host:port, no trailing slash
    ssl_context: ssl.SSLContext | bool  # False: verification off (insecure-skip-tls-verify)
    token: str | None = None
    token_file: Path | None = None

    def authorization(self) -> str | None:
        """The Authorization header value, the token read fresh from its file if it has one."""
        token = self.token
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read token file {self.token_file}: {exc}") from exc
        return f"Bearer {token}" if token else None


def load_config(kubeconfig: Path | None, environ: dict[str, str] | None = None) -> ApiConfig:
    """From `kubeconfig` when given, else the in-cluster service account."""
    if kubeconfig is not None:
        return _from_kubeconfig(kubeconfig)
    return _in_cluster(environ if environ is not None else dict(os.environ))


def _in_cluster(environ: dict[str, str]) -> ApiConfig:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError(
            "not in a pod (KUBERNETES_SERVICE_HOST/PORT unset) and no kubeconfig given: "
            "pass --kubeconfig or set KUBECONFIG"
        )
    if ":" in host:  # IPv6
        host = f"[{host}]"
    ca = SERVICE_ACCOUNT / "ca.crt"
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot read the service account CA {ca}: {exc}") from exc
    return ApiConfig(f"https://{host}:{port}", context, token_file=SERVICE_ACCOUNT / "token")


def _from_kubeconfig(path: Path) -> ApiConfig:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read kubeconfig: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: not a kubeconfig (expected a mapping)")
    context_name = document.get("current-context")
    context = _named(document, "contexts", context_name, path).get("context") or {}
    cluster = _named(document, "clusters", context.get("cluster"), path).get("cluster") or {}
    user = _named(document, "users", context.get("user"), path).get("user") or {}
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            f"{path}: user {context.get('user')!r} authenticates through a plugin, which the "
            "agent does not run; use a token, a token file or a client certificate"
        )
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith("https://"):
        raise ConfigError(f"{path}: cluster server {server!r} is not an https:// address")
    base = path.parent
    ssl_context: ssl.SSLContext | bool
    if cluster.get("insecure-skip-tls-verify"):
        ssl_context = False
    else:
        try:
            ssl_context = ssl.create_default_context(
                cafile=_file(cluster, "certificate-authority", base),
                cadata=_data(cluster, "certificate-authority-data", path),
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{path}: cannot load the cluster's CA: {exc}") from exc
    cert = _data(user, "client-certificate-data", path)
    key = _data(user, "client-key-data", path)
    cert_file = _file(user, "client-certificate", base)
    key_file = _file(user, "client-key", base)
    if (cert or cert_file) and (key or key_file):
        context_for_client = ssl_context if isinstance(ssl_context, ssl.SSLContext) else None
        if context_for_client is None:
            context_for_client = ssl.create_default_context()
            context_for_client.check_hostname = False
            context_for_client.verify_mode = ssl.CERT_NONE
            ssl_context = context_for_client
        _load_client_cert(
            context_for_client,
            cert=cert,
            key=key,
            cert_file=cert_file,
            key_file=key_file,
            path=path,
        )
    token_file = user.get("tokenFile")
    return ApiConfig(
        server,
        ssl_context,
        token=user.get("token"),
        token_file=(base / token_file) if token_file else None,
    )


def _named(document: dict[str, Any], kind: str, name: object, path: Path) -> dict[str, Any]:
    for entry in document.get(kind) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    raise ConfigError(f"{path}: no entry named {name!r} in {kind}")


def _file(section: dict[str, Any], key: str, base: Path) -> str | None:
    value = section.get(key)
    return str(base / value) if value else None


def _data(section: dict[str, Any], key: str, path: Path) -> str | None:
    value = section.get(key)
    if not value:
        return None
    try:
        return base64.b64decode(value).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {key} is not base64 PEM: {exc}") from exc


def _load_client_cert(
    context: ssl.SSLContext,
    *,
    cert: str | None,
    key: str | None,
    cert_file: str | None,
    key_file: str | None,
    path: Path,
) -> None:
    """ssl wants files: inline data goes through a private temporary directory."""
    with tempfile.TemporaryDirectory(prefix="temper-kubeconfig-") as tmp:
        if cert is not None:
            cert_file = os.path.join(tmp, "client.crt")
            Path(cert_file).write_text(cert)
        if key is not None:
            key_file = os.path.join(tmp, "client.key")
            Path(key_file).write_text(key)
            os.chmod(key_file, 0o600)
        try:
            context.load_cert_chain(str(cert_file), str(key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{path}: cannot load the client certificate: {exc}") from exc
