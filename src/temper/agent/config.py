"""The agent's settings: defaults with their reasons, and where each can come from.

Every setting can be a flag (`--state-dir`), an environment variable (`TEMPER_STATE_DIR`) or a
key of a TOML config file (`state_dir = "..."`); flags win over the environment, which wins over
the file. `NODE_NAME` and `KUBECONFIG` are honoured too. Bad values are refused at start, with
the setting's name.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temper import __version__
from temper.policy.cgroups import CgroupDriver

DESCRIPTION = "The Temper node agent: pods into QoS tiers, enforced by scx_layered."
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class AgentConfig:
    pods_dir: Path | None = None  # standalone: pods from manifest files
    node_name: str | None = None  # in a cluster: pods and kill switch from the API server
    kubeconfig: Path | None = None  # None in a cluster: the pod's service account
    health_port: int = 0  # /livez and /readyz on this port, all addresses; 0: none
    # /metrics, /observe, POST /trace and the probes. Loopback by default: the chart opens it
    # to in-cluster scrapers on purpose. None: off.
    listen: tuple[str, int] | None = ("127.0.0.1", 9479)
    # Thread reads per second at most (temper.policy.sampling): ~10 us each.
    sample_budget_per_s: float = 200.0
    observe: bool = True  # False: no sampling, pressure or linter (benchmarks' baseline)
    tracefs: Path | None = None  # default: <host_root>/sys/kernel/tracing
    host_root: Path = Path("/")
    state_dir: Path = Path("/run/temper")
    # Operator tier assignments and the audit log: kept across reboots, unlike the state dir.
    data_dir: Path = Path("/var/lib/temper")
    # The gRPC API for temper-cli: a unix socket (default <state-dir>/api.sock) whose callers
    # are checked by uid: root, and members of `api_group` when the host has that group.
    api_socket: Path | None = None
    api_enabled: bool = True
    api_group: str | None = "temper"
    # Optional TCP with mutual TLS for in-cluster callers (the dashboard): all three files.
    api_listen: tuple[str, int] | None = None
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None
    api_client_ca: Path | None = None
    scx_layered: Path = Path("scx_layered")
    cgroup_driver: CgroupDriver = CgroupDriver.SYSTEMD
    profiles: tuple[Path, ...] = ()
    # Pod events arrive in bursts (a rollout, a node drain); planning once after the burst
    # settles avoids restarting the scheduler for each pod.
    coalesce_s: float = 1.0
    # How often the kernel's truth is re-read when no pod changed: a foreign scheduler, a
    # SysRq-S or a crashed child is noticed within this.
    interval_s: float = 2.0
    # How long scx_layered may take to attach before the start counts as a failure: under a
    # second on real hardware, up to ~35 s in the TCG lab.
    start_timeout_s: float = 60.0
    # A watch silent this long is opened again: it may hang without closing (a quiet cluster
    # is silent too, so a reopen is routine, not an error).
    watch_read_timeout_s: float = 120.0
    # How long a first start waits for the kill switch when nothing was remembered, before it
    # decides on "not known" (safe mode) and says so.
    kill_switch_wait_s: float = 10.0
    # How often the tier load's CPU use is sampled and published.
    publish_interval_s: float = 15.0


_FLAGS: dict[str, str] = {
    "node_name": "this node's name: pods and the kill switch come from the API server",
    "kubeconfig": "kubeconfig file for the API server (default: the pod's service account)",
    "pods_dir": "directory of pod manifests (JSON/YAML with metadata.uid), watched for changes",
    "health_port": "serve /livez and /readyz on this port (default: off)",
    "host_root": "root of the host: its /sys, /proc and /boot (default /)",
    "state_dir": "where the running scx_layered config is written (default /run/temper)",
    "scx_layered": "the scx_layered binary (default: scx_layered on PATH)",
    "cgroup_driver": "the kubelet's cgroup driver: systemd (default) or cgroupfs",
    "start_timeout_s": "seconds scx_layered may take to attach (default 60)",
    "watch_read_timeout_s": "seconds of silence after which an API watch is reopened (default 120)",
    "listen": "serve /metrics, /observe and POST /trace on HOST:PORT (default 127.0.0.1:9479; "
    "'off': none)",
    "sample_budget_per_s": "thread samples per second at most (default 200)",
    "tracefs": "where tracefs is mounted (default <host-root>/sys/kernel/tracing)",
    "observe": "on (default) or off: sample threads, read pressure and run the linter",
    "data_dir": "where tier assignments and the audit log are kept (default /var/lib/temper)",
    "api_socket": "the API's unix socket for temper-cli (default <state-dir>/api.sock; 'off': "
    "no API)",
    "api_group": "members of this group (name or gid) may call the API, besides root "
    "(default temper; 'none': root only)",
    "api_listen": "also serve the API on HOST:PORT with mutual TLS (default: off)",
    "api_tls_cert": "the API's TLS certificate (PEM), with --api-listen",
    "api_tls_key": "the API's TLS private key (PEM), with --api-listen",
    "api_client_ca": "the CA (PEM) that signs the certificates of allowed TLS callers",
}


def parse_config(argv: Sequence[str] | None, env: dict[str, str] | os._Environ[str]) -> AgentConfig:
    """Flags over environment (TEMPER_<NAME>) over config file over defaults."""
    parser = argparse.ArgumentParser(prog="temper-agent", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"temper-agent {__version__}")
    parser.add_argument("--config", type=Path, help="TOML file with any of the settings below")
    for name, help_text in _FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", help=help_text)
    parser.add_argument("--profile", action="append", help="workload profile TOML; repeatable")
    args = parser.parse_args(argv)
    config_path = args.config or (Path(env["TEMPER_CONFIG"]) if "TEMPER_CONFIG" in env else None)
    values = _read_config_file(config_path) if config_path else {}
    for name, plain in (("node_name", "NODE_NAME"), ("kubeconfig", "KUBECONFIG")):
        if plain in env:
            values[name] = env[plain]
    for name in (*_FLAGS, "profile"):
        env_value = env.get(f"TEMPER_{name.upper()}")
        if env_value is not None:
            values[name] = env_value.split(",") if name == "profile" else env_value
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if ("pods_dir" in values) == ("node_name" in values):
        parser.error(
            "give exactly one pod source: --node-name (in a cluster; or NODE_NAME) or "
            "--pods-dir (standalone)"
        )
    return _build_config(values)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read config file: {exc}") from exc
    unknown = set(data) - {*_FLAGS, "profile"}
    if unknown:
        raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
    return dict(data)


def _build_config(values: dict[str, Any]) -> AgentConfig:
    profiles = values.get("profile") or []
    kubeconfig = values.get("kubeconfig")
    return AgentConfig(
        pods_dir=Path(values["pods_dir"]) if "pods_dir" in values else None,
        node_name=_node_name(values.get("node_name")),
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        health_port=_port(values.get("health_port", 0)),
        host_root=Path(values.get("host_root", "/")),
        state_dir=Path(values.get("state_dir", "/run/temper")),
        scx_layered=Path(values.get("scx_layered", "scx_layered")),
        cgroup_driver=CgroupDriver(values.get("cgroup_driver", "systemd")),
        profiles=tuple(Path(p) for p in profiles),
        start_timeout_s=float(values.get("start_timeout_s", 60.0)),
        watch_read_timeout_s=_positive(
            "watch_read_timeout_s", values.get("watch_read_timeout_s", 120)
        ),
        listen=_listen(values.get("listen", "127.0.0.1:9479")),
        sample_budget_per_s=_positive(
            "sample_budget_per_s", values.get("sample_budget_per_s", 200)
        ),
        tracefs=Path(values["tracefs"]) if values.get("tracefs") else None,
        observe=_on_off("observe", values.get("observe", "on")),
        data_dir=Path(values.get("data_dir", "/var/lib/temper")),
        **_api(values),
    )


def _api(values: dict[str, Any]) -> dict[str, Any]:
    socket = str(values.get("api_socket", "")).strip()
    group = str(values.get("api_group", "temper")).strip()
    listen = values.get("api_listen")
    files = {name: values.get(name) for name in ("api_tls_cert", "api_tls_key", "api_client_ca")}
    if listen and not all(files.values()):
        missing = ", ".join(f"--{n.replace('_', '-')}" for n, v in files.items() if not v)
        raise ValueError(f"--api-listen serves mutual TLS only: give {missing} too")
    return {
        "api_socket": Path(socket) if socket and socket != "off" else None,
        "api_enabled": socket != "off",
        "api_group": None if group in ("", "none") else group,
        "api_listen": _listen(listen) if listen else None,
        **{name: Path(value) if value else None for name, value in files.items()},
    }


def _on_off(name: str, value: object) -> bool:
    text = str(value).strip().lower()
    if text not in ("on", "off", "true", "false"):
        raise ValueError(f"{name} must be on or off, not {value!r}")
    return text in ("on", "true")


def _listen(value: object) -> tuple[str, int] | None:
    text = str(value).strip()
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen address {text!r} is not HOST:PORT (or 'off')")
    return host.strip("[]"), _port(port)


def _node_name(value: object) -> str | None:
    if value is None:
        return None
    name = str(value).strip()
    if not name or len(name) > 253 or not _NODE_NAME.fullmatch(name):
        raise ValueError(f"node name {value!r} is not a valid Kubernetes node name")
    return name


def _positive(name: str, value: object) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not number > 0:
        raise ValueError(f"{name} must be positive, got {number}")
    return number


def _port(value: object) -> int:
    try:
        port = int(str(value))
    except ValueError:
        raise ValueError(f"port {value!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0-65535")
    return port
