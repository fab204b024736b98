"""load_config from kubeconfig files on disk, with real certificates from TinyCA."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from temper.kube.config import ConfigError, load_config
from temper_testing.kubetest.tinyca import TinyCA

SERVER = "https://127.0.0.1:6443"
WAIT_S = 5.0


class Pki:
    """A CA, a client certificate for "admin", and a serving certificate for 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = TinyCA()
        self.ca_file = directory / "ca.crt"
        self.ca_file.write_bytes(self.ca.cert_pem)
        self.ca.issue(directory / "admin", "admin", groups=("system:masters",))
        self.ca.issue(directory / "server", "apiserver", hosts=("127.0.0.1",))
        self.client_cert = directory / "admin.crt"
        self.client_key = directory / "admin.key"
        self.server_cert = directory / "server.crt"
        self.server_key = directory / "server.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path,
    *,
    cluster: dict[str, Any],
    user: dict[str, Any],
    context: dict[str, Any] | None = None,
    current: str = "work",
) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "contexts": [{"name": "work", "context": context or {"cluster": "lab", "user": "me"}}],
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": "me", "user": user}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def ca_subjects(context: ssl.SSLContext) -> list[str]:
    """The common names of the CA certificates a context trusts."""
    names = []
    for cert in context.get_ca_certs():
        for rdn in cert["subject"]:
            names += [value for key, value in rdn if key == "commonName"]
    return names


async def client_name_seen_by_server(pki: Pki, client: ssl.SSLContext) -> str:
    """Handshake with a local TLS server that demands a client certificate; its CN."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca_file)
    server_context.load_cert_chain(pki.server_cert, pki.server_key)
    server_context.verify_mode = ssl.CERT_REQUIRED
    seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        seen.set_result(dict(rdn[0] for rdn in peer["subject"])["commonName"])
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client), WAIT_S
        )
        try:
            return await asyncio.wait_for(seen, WAIT_S)
        finally:
            writer.close()
            await writer.wait_closed()


# -- servers and certificate authorities ----------------------------------------------------------


def test_ca_data_and_token(tmp_path: Path, pki: Pki) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER + "/", "certificate-authority-data": b64(pki.ca.cert_pem)},
        user={"token": "s3cret"},
    )
    config = load_config(path)
    assert config.server == SERVER  # no trailing slash
    assert isinstance(config.ssl_context, ssl.SSLContext)
    assert config.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert config.ssl_context.check_hostname
    assert ca_subjects(config.ssl_context) == ["temper-test-ca"]
    assert config.authorization() == "Bearer s3cret"


def test_ca_file_is_relative_to_the_kubeconfig_not_the_working_directory(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home" / ".kube"
    (home / "certs").mkdir(parents=True)
    (home / "certs" / "ca.crt").write_bytes(pki.ca.cert_pem)
    path = write_kubeconfig(
        home / "config",
        cluster={"server": SERVER, "certificate-authority": "certs/ca.crt"},
        user={"token": "t"},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert isinstance(config.ssl_context, ssl.SSLContext)
    assert ca_subjects(config.ssl_context) == ["temper-test-ca"]


def test_insecure_skip_tls_verify_turns_verification_off(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "insecure-skip-tls-verify": True},
        user={"token": "t"},
    )
    assert load_config(path).ssl_context is False


@pytest.mark.parametrize(
    "server", ["http://127.0.0.1:8080", "127.0.0.1:6443", "", None, "HTTPS//nope"]
)
def test_a_server_that_is_not_https_is_refused(tmp_path: Path, server: str | None) -> None:
    cluster: dict[str, Any] = {"insecure-skip-tls-verify": True}
    if server is not None:
        cluster["server"] = server
    path = write_kubeconfig(tmp_path / "config", cluster=cluster, user={"token": "t"})
    with pytest.raises(ConfigError, match=r"is not an https:// address") as error:
        load_config(path)
    assert str(path) in str(error.value)


# -- client certificates -------------------------------------------------------------------------


def test_client_certificate_data_is_presented_in_the_handshake(tmp_path: Path, pki: Pki) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "certificate-authority-data": b64(pki.ca.cert_pem)},
        user={
            "client-certificate-data": b64(pki.client_cert.read_bytes()),
            "client-key-data": b64(pki.client_key.read_bytes()),
        },
    )
    config = load_config(path)
    assert isinstance(config.ssl_context, ssl.SSLContext)
    assert config.authorization() is None
    assert asyncio.run(client_name_seen_by_server(pki, config.ssl_context)) == "admin"
    assert list(tmp_path.iterdir()) == [path]  # the inline key left no file beside it


def test_client_certificate_files_are_relative_to_the_kubeconfig(tmp_path: Path, pki: Pki) -> None:
    directory = tmp_path / "kube"
    directory.mkdir()
    (directory / "me.crt").write_bytes(pki.client_cert.read_bytes())
    (directory / "me.key").write_bytes(pki.client_key.read_bytes())
    (directory / "ca.crt").write_bytes(pki.ca.cert_pem)
    path = write_kubeconfig(
        directory / "config",
        cluster={"server": SERVER, "certificate-authority": "ca.crt"},
        user={"client-certificate": "me.crt", "client-key": "me.key"},
    )
    config = load_config(path)
    assert isinstance(config.ssl_context, ssl.SSLContext)
    assert asyncio.run(client_name_seen_by_server(pki, config.ssl_context)) == "admin"


def test_a_client_certificate_without_verification_still_gets_a_context(
    tmp_path: Path, pki: Pki
) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "insecure-skip-tls-verify": True},
        user={
            "client-certificate-data": b64(pki.client_cert.read_bytes()),
            "client-key-data": b64(pki.client_key.read_bytes()),
        },
    )
    context = load_config(path).ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname
    assert asyncio.run(client_name_seen_by_server(pki, context)) == "admin"


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(
    tmp_path: Path, pki: Pki
) -> None:
    TinyCA().issue(tmp_path / "other", "other")
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "certificate-authority-data": b64(pki.ca.cert_pem)},
        user={
            "client-certificate-data": b64(pki.client_cert.read_bytes()),
            "client-key-data": b64((tmp_path / "other.key").read_bytes()),
        },
    )
    with pytest.raises(ConfigError, match="cannot load the client certificate"):
        load_config(path)


def test_data_that_is_not_base64_is_a_config_error(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "certificate-authority-data": "%%% not base64 %%%"},
        user={"token": "t"},
    )
    with pytest.raises(ConfigError, match="certificate-authority-data is not base64 PEM"):
        load_config(path)


# -- tokens and plugins --------------------------------------------------------------------------


def test_token_file_is_read_fresh_on_every_call(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "insecure-skip-tls-verify": True},
        user={"tokenFile": "token", "token": "stale-inline"},
    )
    config = load_config(path)
    assert config.token_file == tmp_path / "token"
    assert config.authorization() == "Bearer first"
    (tmp_path / "token").write_text("rotated")
    assert config.authorization() == "Bearer rotated"
    (tmp_path / "token").unlink()
    with pytest.raises(ConfigError, match="cannot read token file"):
        config.authorization()


def test_no_token_means_no_authorization_header(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "insecure-skip-tls-verify": True},
        user={},
    )
    assert load_config(path).authorization() is None


@pytest.mark.parametrize("plugin", ["exec", "auth-provider"])
def test_plugin_users_are_refused(tmp_path: Path, plugin: str) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "insecure-skip-tls-verify": True},
        user={plugin: {"command": "aws", "args": ["eks", "get-token"]}},
    )
    with pytest.raises(ConfigError, match="plugin") as error:
        load_config(path)
    assert "'me'" in str(error.value)


# -- broken documents ----------------------------------------------------------------------------


def test_a_missing_context_is_named(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config", cluster={"server": SERVER}, user={}, current="prod"
    )
    with pytest.raises(ConfigError, match=r"no entry named 'prod' in contexts"):
        load_config(path)


def test_a_missing_cluster_is_named(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER},
        user={},
        context={"cluster": "staging", "user": "me"},
    )
    with pytest.raises(ConfigError, match=r"no entry named 'staging' in clusters"):
        load_config(path)


def test_a_missing_user_is_named(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER},
        user={},
        context={"cluster": "lab", "user": "ghost"},
    )
    with pytest.raises(ConfigError, match=r"no entry named 'ghost' in users"):
        load_config(path)


def test_not_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("clusters: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read kubeconfig") as error:
        load_config(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "", "42\n"])
def test_not_a_mapping_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        load_config(tmp_path / "absent")


# -- in the cluster ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
        {"KUBERNETES_SERVICE_PORT": "443"},
        {"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": "443"},
    ],
)
def test_outside_a_pod_without_a_kubeconfig_says_what_to_pass(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="--kubeconfig"):
        load_config(None, environ)


@pytest.mark.parametrize(
    "cluster",
    [
        {"certificate-authority": "missing-ca.crt"},
        {"certificate-authority-data": b64(b"not a certificate")},
    ],
)
def test_an_unusable_ca_is_a_config_error(tmp_path: Path, cluster: dict[str, Any]) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": "https://127.0.0.1:6443", **cluster},
        user={"token": "t"},
    )
    with pytest.raises(ConfigError, match="CA"):
        load_config(path)
