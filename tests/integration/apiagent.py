"""A running `temper-agent` with its API, on a fake host, for the API tests.

The socket lives in a short directory under /tmp (a unix socket path has 107 bytes) that every
user may enter, so the permission tests can connect as an unprivileged uid and be refused by
the agent's check rather than by the directory's mode.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from builders import shop_pod
from temper.api.v1 import agent_pb2_grpc as pb_grpc
from temper.policy.machine import synthetic_shape
from temper_testing.host.fakesys import write_fake_kernel, write_fake_sysfs
from waiting import wait_until

CLI = [sys.executable, "-m", "temper.cli.agentctl"]
API_GROUP = 4242  # a gid no user of the test machine is in: granted with setpriv --groups


@dataclass
class ApiAgent:
    work: Path  # test-private: pods, state, data, log
    socket: Path  # world-enterable directory
    process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def host(self) -> Path:
        return self.work / "host"

    def log(self) -> str:
        return (self.work / "agent.log").read_text()

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == name]

    def audit(self) -> list[dict[str, Any]]:
        path = self.data / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def start(self, *extra: str) -> None:
        fake = self.work / "scx_layered"
        argv = [
            sys.executable, "-m", "temper.agent.main",
            "--pods-dir", str(self.work / "pods"),
            "--host-root", str(self.host),
            "--state-dir", str(self.work / "state"),
            "--data-dir", str(self.data),
            "--scx-layered", str(fake),
            "--listen", "off",
            "--api-socket", str(self.socket),
            "--api-group", str(API_GROUP),
            *extra,
        ]  # fmt: skip
        log_path = self.work / "agent.log"
        before = len(log_path.read_text()) if log_path.exists() else 0
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

        def new_log() -> str:
            return log_path.read_text()[before:]

        wait_until(lambda: '"event": "api' in new_log(), 30, "the API")
        assert '"api-error"' not in new_log(), new_log()
        wait_until(lambda: '"mode": "enforcing"' in new_log(), 30, "enforcing")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def stub(self) -> Iterator[pb_grpc.AgentStub]:
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            yield pb_grpc.AgentStub(channel)

    def cli(
        self, *args: str, prefix: Sequence[str] = (), python: Sequence[str] = CLI, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        argv = [*prefix, *python, "--socket", str(self.socket), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kw)


def make_agent(tmp_path: Path) -> ApiAgent:
    host = write_fake_kernel(tmp_path / "host")
    write_fake_sysfs(host, synthetic_shape(1, 2, 2, 1))
    pods = tmp_path / "pods"
    pods.mkdir()
    (pods / "web.json").write_text(json.dumps(shop_pod("web", 1)))
    (pods / "checkout.json").write_text(json.dumps(shop_pod("checkout", 2, "temper-critical")))
    fake = tmp_path / "scx_layered"
    fake.write_text(
        f'#!/bin/sh\nexec {sys.executable} -m temper_testing.host.fakescx --root {host} "$@"\n'
    )
    fake.chmod(0o755)
    short = Path(tempfile.mkdtemp(prefix="temper-api-test-"))
    short.chmod(0o755)
    return ApiAgent(tmp_path, short / "api.sock")


def unprivileged_python(into: Path) -> list[str]:
    """A Python that uid 65534 can run, with temper, grpc and protobuf importable.

    The project's interpreter and checkout may sit under a directory only root may enter
    (/root), so the CLI's code and its two dependencies are copied to a world-readable
    directory and run by the system's Python of the same minor version."""
    system = Path("/usr/bin") / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not system.exists():
        raise AssertionError(f"{system} is missing: the permission tests run the CLI with it")
    import google.protobuf  # noqa: PLC0415

    import temper  # noqa: PLC0415

    for package in (Path(temper.__file__).parent, Path(grpc.__file__).parent,
                    Path(google.protobuf.__file__).parent.parent):  # fmt: skip
        shutil.copytree(package, into / package.name, dirs_exist_ok=True)
    import typing_extensions  # noqa: PLC0415  (grpc's dependency)

    shutil.copy(typing_extensions.__file__, into)
    for path in [into, *into.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    os.chmod(into, 0o755)
    return ["env", f"PYTHONPATH={into}", str(system), "-m", "temper.cli.agentctl"]
