"""What the host's CPUs do while a guest measures: written on the host, read in the guest.

This project's build machines are VMs with 2 cores, and a measuring guest's two spinning vCPUs
hold both of them (docs/lab.md). Anything else the host runs, and any time the hypervisor
takes, stops a vCPU in the middle of a phase, and the guest cannot tell from inside: its clock
comes from the host and keeps running. So the host tells it.

While a guest runs, `vm.run_in_guest(host_meter=PATH)` rewrites PATH, a file in a writable
share, about every `METER_PERIOD_S` with one `HostSample`: the host's cumulative CPU seconds
busy, stolen by the hypervisor, used by QEMU, and of that used by QEMU's threads that run no
vCPU (its main loop, device and RCU threads), at the host's monotonic time. The guest finds
PATH in `$TEMPER_LAB_HOST_METER`, reads it at a phase's start and end, and `between` gives
what the host did besides running the guest in that window. A benchmark then knows which
phases were disturbed from outside, and measures them again.

The emulator's own threads are counted apart because they run wherever the host puts them,
beside the pinned vCPU threads: work a guest makes them do (device I/O, timers) takes host time
from a vCPU that may be running someone else's code. A phase records their CPU, so a
difference between two scenarios that is the emulator's shows as such.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "TEMPER_LAB_HOST_METER"
METER_PERIOD_S = 0.5
VCPU_THREAD = re.compile(r"CPU (\d+)/TCG")  # a TCG vCPU thread's name (QEMU's debug-threads)


@dataclass(frozen=True)
class HostSample:
    """Cumulative host CPU seconds (all CPUs together) at `time_s` (the host's monotonic clock)."""

    time_s: float
    busy_s: float  # not idle: steal, QEMU and everything else
    steal_s: float  # taken by the hypervisor the host runs on
    qemu_s: float  # used by the QEMU process running the guest
    emulator_s: float  # of which by QEMU's threads that are not vCPU threads

    def line(self) -> str:
        qemu = f"{self.qemu_s:.2f} {self.emulator_s:.2f}"
        return f"{self.time_s:.3f} {self.busy_s:.2f} {self.steal_s:.2f} {qemu}\n"

    @classmethod
    def parse(cls, text: str) -> HostSample:
        words = text.split()
        if len(words) != 5:
            raise ValueError(f"not a host sample: {text!r}")
        return cls(*(float(w) for w in words))


@dataclass(frozen=True)
class HostWindow:
    """What the host did between two samples, in mean CPUs."""

    seconds: float
    other_cpus: float  # busy, not QEMU: other processes, the host's kernel, and steal
    steal_cpus: float  # of which the hypervisor took
    emulator_cpus: float  # QEMU's threads that run no vCPU

    def as_dict(self) -> dict[str, float]:
        return {
            "seconds": round(self.seconds, 1),
            "other_cpus": round(self.other_cpus, 3),
            "steal_cpus": round(self.steal_cpus, 3),
            "emulator_cpus": round(self.emulator_cpus, 3),
        }


def between(first: HostSample, last: HostSample) -> HostWindow:
    seconds = last.time_s - first.time_s
    if seconds <= 0:
        return HostWindow(0.0, 0.0, 0.0, 0.0)
    other = (last.busy_s - first.busy_s) - (last.qemu_s - first.qemu_s)
    return HostWindow(
        seconds,
        max(other, 0.0) / seconds,
        (last.steal_s - first.steal_s) / seconds,
        max(last.emulator_s - first.emulator_s, 0.0) / seconds,
    )


def host_cpu_s() -> tuple[float, float]:
    """Seconds the host's CPUs have been busy since boot (all CPUs together, steal included),
    and of that, stolen by the hypervisor (from /proc/stat's first line)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / tick, fields[7] / tick


def sample_host(qemu_pid: int) -> HostSample:
    """The host side: the host's CPU totals and the QEMU process's CPU time, now, with the part
    its threads that are not vCPU threads used: the process's total (which keeps the time of
    threads that exited, such as its I/O workers) less its vCPU threads', which live as long as
    the guest."""
    busy, steal = host_cpu_s()
    qemu = _cpu_s(Path(f"/proc/{qemu_pid}/stat").read_text())
    vcpus = 0.0
    for task in Path(f"/proc/{qemu_pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread exiting under us
            stat = (task / "stat").read_text()
            if VCPU_THREAD.fullmatch(stat[stat.index("(") + 1 : stat.rindex(")")]):
                vcpus += _cpu_s(stat)
    return HostSample(time.monotonic(), busy, steal, qemu, max(qemu - vcpus, 0.0))


def _cpu_s(stat: str) -> float:
    """utime + stime of a /proc stat line (fields 14 and 15, counted after the command's ")")."""
    after_comm = stat[stat.rindex(")") + 2 :].split()
    return (int(after_comm[11]) + int(after_comm[12])) / os.sysconf("SC_CLK_TCK")


def write_sample(path: Path, sample: HostSample) -> None:
    """Replace `path`'s sample in one rename, so a reader never sees half a line."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(sample.line())
    partial.replace(path)


def read_sample(path: Path) -> HostSample | None:
    """The guest side: the host's latest sample, or None when there is none (yet)."""
    try:
        return HostSample.parse(path.read_text())
    except (OSError, ValueError):
        return None


def meter_path() -> Path | None:
    """Where this guest's host writes its samples, when it does."""
    value = os.environ.get(ENV)
    return Path(value) if value else None
