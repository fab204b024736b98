"""`temper-agent --node-name` as a real process on a fake host, for tests and benchmarks.

The host is a fake sysfs with sched_ext (`temper_testing.host.fakesys`) and the scheduler is the
fake scx_layered child (`temper_testing.host.fakescx`), so the agent does everything but load BPF.
Its JSON log lines are read back with `events()`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temper.host.sched_ext import read_sched_ext
from temper.policy.machine import MachineShape, synthetic_shape
from temper_testing.host.fakesys import write_fake_kernel, write_fake_sysfs


class AgentProcess:
    def __init__(
        self,
        workdir: Path,
        node: str,
        kubeconfig: Path,
        extra_args: Sequence[str] = (),
        shape: MachineShape | None = None,
    ) -> None:
        self.workdir = workdir
        self.node = node
        self.kubeconfig = kubeconfig
        self.extra_args = tuple(extra_args)  # more agent flags, e.g. --watch-read-timeout-s
        self.host = workdir / "host"
        if not self.host.exists():
            write_fake_kernel(self.host)
            write_fake_sysfs(self.host, shape or synthetic_shape(1, 2, 2, 1))
        self.log = workdir / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fake = self.workdir / "scx_layered"
        fake.write_text(
            f"#!/bin/sh\nexec {sys.executable} -m temper_testing.host.fakescx "
            f'--root {self.host} "$@"\n'
        )
        fake.chmod(0o755)
        with self.log.open("a") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "temper.agent.main",
                    *("--node-name", self.node, "--kubeconfig", str(self.kubeconfig)),
                    *("--host-root", str(self.host), "--state-dir", str(self.workdir / "state")),
                    *("--data-dir", str(self.workdir / "data")),
                    *("--scx-layered", str(fake)),
                    *self.extra_args,
                ],
                stderr=log,
                env={**os.environ, "NO_PROXY": "127.0.0.1"},
            )

    def stop(self) -> None:
        """SIGTERM (after SIGCONT, in case a test froze it), then SIGKILL if it hangs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    @property
    def api_socket(self) -> Path:
        return self.workdir / "state" / "api.sock"

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        found = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in found if kind is None or e["event"] == kind]

    def enforcing(self) -> bool:
        return read_sched_ext(self.host).is_ours()
