"""Workload processes for the simulated node: start held, place, release, await, kill.

A process must be in its container's cgroup before it starts its threads, or they would run for
a moment in the wrong cgroup. So `spawn_workload` starts `python -m temper_testing.lab.workload`
held on a pipe; the caller moves it (writes its pid into `cgroup.procs`), then `release` writes
the byte it waits for. The pipe stays open afterwards as a lifeline: when this process dies
without cleaning up, the workload reads end of file and exits, so no spinner outlives its
parent. That costs one descriptor per running workload. `await_ready` waits until each has named
its threads (`READY_TIMEOUT_S` at the guest's pace, `temper_testing.lab.pace`); `kill` sends
SIGKILL and reaps.

Several workloads start at once: spawn them all, place and release each, then await them all,
so their interpreters start in parallel (about 2 s each in a quiet lab guest).

`spawn_in` does the same for a plain command (a shell spinner): held in `read` on its stdin,
placed, released once it has blocked. The block matters under scx_layered, which matches a task
to a layer when it wakes up (docs/scx-layered.md): a spinner moved while it runs would keep the
layer of the cgroup it was forked in, the host's, for as long as it spins.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from temper_testing.lab.errors import LabError
from temper_testing.lab.pace import pace, workload_env

WORKLOAD_MODULE = "temper_testing.lab.workload"
# Python starts in ~50 ms on the host and in about 2 s in a quiet lab guest: 30 s, paced, is a hang.
READY_TIMEOUT_S = 30.0
KILL_WAIT_S = 10.0  # SIGKILL cannot be caught; longer means a task stuck in the kernel
SPIN = ("sh", "-c", "while :; do :; done")
HELD = ("sh", "-c", 'read -r go; exec "$@"', "held")  # runs "$@" after one line on stdin
BLOCKED_STATES = frozenset("SD")  # /proc/<pid>/stat: sleeping, or waiting on I/O


class WorkloadError(LabError):
    """A workload process would not start, exited before it was ready, or would not die."""


@dataclass
class WorkloadProcess:
    """A workload child; `lifeline` and `ready` are our ends of its pipes, -1 once closed."""

    popen: subprocess.Popen[bytes]
    lifeline: int
    ready: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def close_pipes(self) -> None:
        for fd in (self.lifeline, self.ready):
            if fd >= 0:
                os.close(fd)
        self.lifeline = self.ready = -1


def spawn_workload(args: Sequence[str]) -> WorkloadProcess:
    """Start a workload held until `release`; its stderr is ours, for diagnosis."""
    start_read, start_write = os.pipe()
    ready_read, ready_write = os.pipe()
    command = [sys.executable, "-m", WORKLOAD_MODULE, *args]
    command += [f"--start-fd={start_read}", f"--ready-fd={ready_write}"]
    try:
        popen = subprocess.Popen(
            command,
            pass_fds=(start_read, ready_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=workload_env(),
        )
    except OSError as exc:
        os.close(start_write)
        os.close(ready_read)
        raise WorkloadError(f"cannot start {WORKLOAD_MODULE}: {exc.strerror or exc}") from exc
    finally:
        os.close(start_read)
        os.close(ready_write)
    return WorkloadProcess(popen, start_write, ready_read)


def spawn_in(container: Path, argv: Sequence[str] = SPIN) -> subprocess.Popen[bytes]:
    """Start `argv` in the cgroup directory `container`: it runs nothing outside it, and it has
    slept once inside it before it starts, so the scheduler places it by that cgroup."""
    process = subprocess.Popen([*HELD, *argv], stdin=subprocess.PIPE)
    assert process.stdin is not None
    try:
        (container / "cgroup.procs").write_text(f"{process.pid}\n")
        deadline = time.monotonic() + READY_TIMEOUT_S * pace()
        while (state := _state(process.pid)) not in BLOCKED_STATES:
            if not state or process.poll() is not None:
                raise WorkloadError(f"{argv[0]} exited before it was released: {process.wait()}")
            if time.monotonic() > deadline:
                raise WorkloadError(f"{_describe(process.pid)}: never blocked to wait for release")
            time.sleep(0.01)
        process.stdin.write(b"go\n")
        process.stdin.close()
    except BaseException:
        process.kill()
        process.wait()
        process.stdin.close()
        raise
    return process


def release(process: WorkloadProcess) -> None:
    """Let a placed workload start its threads."""
    try:
        os.write(process.lifeline, b"g")
    except BrokenPipeError as exc:
        raise WorkloadError(f"workload process {process.pid} exited before it started") from exc


def await_ready(processes: Sequence[WorkloadProcess], timeout_s: float | None = None) -> None:
    """Wait until each released process has named its threads; WorkloadError if one cannot.
    The wait is `timeout_s`, or `READY_TIMEOUT_S` at the guest's pace."""
    if timeout_s is None:
        timeout_s = READY_TIMEOUT_S * pace()
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:  # not select(): descriptors may pass 1024
        for process in processes:
            selector.register(process.ready, selectors.EVENT_READ, process)
        while selector.get_map():
            events = selector.select(max(deadline - time.monotonic(), 0))
            if not events:
                late = sorted(key.data.pid for key in selector.get_map().values())
                raise WorkloadError(
                    f"workload processes {late} not ready after {round(timeout_s, 1):g} s"
                    f" (pace {pace():.2f}; {'; '.join(_describe(pid) for pid in late)})"
                )
            for key, _ in events:
                selector.unregister(key.fd)
                _read_ready(key.data)


def kill(process: WorkloadProcess) -> list[str]:
    """SIGKILL the process and reap it; the problem, if it would not die."""
    try:
        process.popen.kill()
        process.popen.wait(KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        return [f"workload process {process.pid} still alive {KILL_WAIT_S} s after SIGKILL"]
    finally:
        process.close_pipes()
    return []


def _read_ready(process: WorkloadProcess) -> None:
    reported = os.read(process.ready, 1)
    os.close(process.ready)
    process.ready = -1
    if reported:
        return
    try:
        status: int | str = process.popen.wait(KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        status = "it closed its ready pipe"
    raise WorkloadError(f"workload process {process.pid} failed before it was ready: {status}")


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name: [0] is the state; OSError once gone."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _state(pid: int) -> str:
    """The one-letter state ("R", "S", "D", ...; "" once the process is gone)."""
    try:
        return _stat_fields(pid)[0]
    except (OSError, IndexError):
        return ""


def _describe(pid: int) -> str:
    """A late process's state and CPU time from /proc: is it running, waiting, or starved?"""
    try:
        fields = _stat_fields(pid)
    except OSError as exc:
        return f"{pid}: {exc.strerror or exc}"
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return f"{pid}: state {fields[0]}, {cpu_s:.2f} s CPU, {int(fields[17])} threads"
