"""The scx_layered child process: start it on a config file, watch it, signal it.

The child's lifetime is tied to the agent's: it is started with PR_SET_PDEATHSIG=SIGKILL, so if
the agent dies the kernel kills the child, which drops its BPF link and puts every task back on
the stock scheduler (docs/reliability.md row B1; scx_layered's link is not pinned).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from temper.host.errors import HostError
from temper.policy.scx import ATTACH_WHEN_FREE, SCHEDULER_FLAGS

_PR_SET_PDEATHSIG = 1
OUTPUT_LINES = 40  # enough for scx_layered's exit report and the start of a kernel dump


@dataclass(frozen=True)
class SchedulerCommand:
    """How to run the scheduler: the binary and flags before the config argument."""

    argv_prefix: tuple[str, ...]

    def argv(self, config_path: Path, loaded_file: Path | None = None) -> list[str]:
        """With `loaded_file`, the scheduler loads, creates that file, and attaches only once
        no sched_ext scheduler is attached (`--attach-when-free`, our scx_layered patch)."""
        handover = [ATTACH_WHEN_FREE, str(loaded_file)] if loaded_file else []
        return [*self.argv_prefix, *handover, f"f:{config_path}"]


def check_scheduler(binary: str, timeout_s: float = 30.0) -> None:
    """HostError unless `binary` runs and is our patched scx_layered (its --help has our flags;
    scx_layered prints its help on stderr and exits 255)."""
    try:
        done = subprocess.run(
            [binary, "--help"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostError(f"cannot run {binary} --help: {exc}") from exc
    text = done.stdout + done.stderr
    missing = [f for f in (*SCHEDULER_FLAGS, ATTACH_WHEN_FREE) if f not in text]
    if missing:
        raise HostError(
            f"{binary} is not Temper's patched scx_layered: its --help lacks "
            f"{', '.join(missing)} (build it with `make scx-layered`; docs/adr/0003)"
        )


def die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class SchedulerProcess:
    """One running scheduler child; its output's last lines are kept for exit reports."""

    def __init__(self, process: asyncio.subprocess.Process, config_path: Path) -> None:
        self._process = process
        self.config_path = config_path
        self._tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        self._reader = asyncio.create_task(self._read_output(), name="scx-output")

    @classmethod
    async def start(
        cls, command: SchedulerCommand, config_path: Path, loaded_file: Path | None = None
    ) -> SchedulerProcess:
        try:
            process = await asyncio.create_subprocess_exec(
                *command.argv(config_path, loaded_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=die_with_parent,
                env={**os.environ, "NO_COLOR": "1"},  # plain log lines, not terminal colours
            )
        except OSError as exc:
            raise HostError(f"cannot start {command.argv_prefix[0]}: {exc.strerror}") from exc
        return cls(process, config_path)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    @property
    def running(self) -> bool:
        return self._process.returncode is None

    def output_tail(self) -> str:
        return "\n".join(self._tail)

    def send(self, signum: int) -> None:
        """Signal the child; a child that already exited is not an error."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    async def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if still running after `timeout_s`."""
        try:
            code = await asyncio.wait_for(self._process.wait(), timeout_s)
        except TimeoutError:
            return None
        await self._reader
        return code

    async def _read_output(self) -> None:
        stream = self._process.stdout
        assert stream is not None
        async for raw in stream:
            self._tail.append(raw.decode(errors="replace").rstrip())
