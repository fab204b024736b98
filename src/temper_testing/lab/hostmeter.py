"""What the host's CPUs do while a guest measures: written on the host, read in the guest.

This project's build machines are VMs with 2 cores, and a measuring guest's two spinning vCPUs
hold both of them (docs/lab.md). Anything else the host runs, and any time the hypervisor
takes, stops a vCPU in the middle of a phase, and the guest cannot tell from inside: its clock
comes from the host and keeps running. So the host tells it.

While a guest runs, `vm.run_in_guest(host_meter=PATH)` rewrites PATH, a file in a writable
share, about every `METER_PERIOD_S` with one `HostSample`: the host's cumulative CPU seconds
busy, stolen by the hypervisor, and used by QEMU, at the host's monotonic time. The guest finds
PATH in `$TEMPER_LAB_HOST_METER`, reads it at a phase's start and end, and `between` gives
what the host did besides running the guest in that window. A benchmark then knows which
phases were disturbed from outside, and measures them again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "TEMPER_LAB_HOST_METER"
METER_PERIOD_S = 0.5


@dataclass(frozen=True)
class HostSample:
    """Cumulative host CPU seconds (all CPUs together) at `time_s` (the host's monotonic clock)."""

    time_s: float
    busy_s: float  # not idle: steal, QEMU and everything else
    steal_s: float  # taken by the hypervisor the host runs on
    qemu_s: float  # used by the QEMU process running the guest

    def line(self) -> str:
        return f"{self.time_s:.3f} {self.busy_s:.2f} {self.steal_s:.2f} {self.qemu_s:.2f}\n"

    @classmethod
    def parse(cls, text: str) -> HostSample:
        words = text.split()
        if len(words) != 4:
            raise ValueError(f"not a host sample: {text!r}")
        time_s, busy_s, steal_s, qemu_s = (float(w) for w in words)
        return cls(time_s, busy_s, steal_s, qemu_s)


@dataclass(frozen=True)
class HostWindow:
    """What the host did between two samples, in mean CPUs."""

    seconds: float
    other_cpus: float  # busy, not QEMU: other processes, the host's kernel, and steal
    steal_cpus: float  # of which the hypervisor took

    def as_dict(self) -> dict[str, float]:
        return {
            "seconds": round(self.seconds, 1),
            "other_cpus": round(self.other_cpus, 3),
            "steal_cpus": round(self.steal_cpus, 3),
        }


def between(first: HostSample, last: HostSample) -> HostWindow:
    seconds = last.time_s - first.time_s
    if seconds <= 0:
        return HostWindow(0.0, 0.0, 0.0)
    other = (last.busy_s - first.busy_s) - (last.qemu_s - first.qemu_s)
    return HostWindow(seconds, max(other, 0.0) / seconds, (last.steal_s - first.steal_s) / seconds)


def host_cpu_s() -> tuple[float, float]:
    """Seconds the host's CPUs have been busy since boot (all CPUs together, steal included),
    and of that, stolen by the hypervisor (from /proc/stat's first line)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / tick, fields[7] / tick


def sample_host(qemu_pid: int) -> HostSample:
    """The host side: the host's CPU totals and the QEMU process's CPU time, now."""
    busy, steal = host_cpu_s()
    tick = os.sysconf("SC_CLK_TCK")
    # /proc/PID/stat: utime and stime are fields 14 and 15, counted after the command's ")".
    stat = Path(f"/proc/{qemu_pid}/stat").read_text()
    after_comm = stat[stat.rindex(")") + 2 :].split()
    qemu = (int(after_comm[11]) + int(after_comm[12])) / tick
    return HostSample(time.monotonic(), busy, steal, qemu)


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
