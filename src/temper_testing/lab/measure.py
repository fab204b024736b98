"""Measurement helpers shared by the lab benchmarks' guest sides."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

N = TypeVar("N", int, float)


def percentile(ordered: Sequence[N], pct: float) -> N:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return 0
    rank = max(math.ceil(pct / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def latency_figures(latencies: Sequence[int]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "lc_p50_us": percentile(ordered, 50),
        "lc_p99_us": percentile(ordered, 99),
        "lc_p999_us": percentile(ordered, 99.9),
        "lc_max_us": ordered[-1] if ordered else 0,
        "lc_samples": len(ordered),
    }


def read_cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat's first line."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields)
    return total - idle, total


IPI_ROWS = ("LOC", "RES", "CAL", "TLB")  # local timer, reschedule, function-call, TLB shootdown


def read_interrupts(text: str | None = None) -> dict[int, dict[str, int]]:
    """Interrupts each CPU has taken since boot, from /proc/interrupts: {cpu: {row: count}} for
    the `IPI_ROWS`, and "device" for all numbered (device) lines together."""
    lines = (Path("/proc/interrupts").read_text() if text is None else text).splitlines()
    cpus = [int(word.removeprefix("CPU")) for word in lines[0].split()]
    counts: dict[int, dict[str, int]] = {
        cpu: dict.fromkeys((*IPI_ROWS, "device"), 0) for cpu in cpus
    }
    for line in lines[1:]:
        label, _, rest = line.partition(":")
        row = "device" if label.strip().isdigit() else label.strip()
        if row not in counts[cpus[0]]:
            continue
        for cpu, word in zip(cpus, rest.split(), strict=False):
            if word.isdigit():
                counts[cpu][row] += int(word)
    return counts


def interrupts_between(
    first: dict[int, dict[str, int]], last: dict[int, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """What each CPU took between two `read_interrupts`, keyed "cpuN" for the JSON."""
    return {
        f"cpu{cpu}": {row: last[cpu][row] - count for row, count in rows.items()}
        for cpu, rows in first.items()
    }


def dmesg_sched_ext() -> list[str]:
    """The kernel's sched_ext messages (enables, disables and why), for the report."""
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"dmesg failed: {exc}"]
    return [line for line in done.stdout.splitlines() if "sched_ext" in line][-40:]


def idle_util(seconds: float) -> float:
    """Node CPU utilization (%) over `seconds` while this process sleeps: the lab's floor."""
    busy_0, total_0 = read_cpu_times()
    time.sleep(seconds)
    busy_1, total_1 = read_cpu_times()
    return round(100 * (busy_1 - busy_0) / max(total_1 - total_0, 1), 1)
