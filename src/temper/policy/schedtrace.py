"""Scheduler traces in ftrace text format: the bounds of a capture, and wake-to-run per tier.

Why wake-to-run: a latency-critical pod suffers when its threads are runnable but not running.
The time from a thread's `sched_wakeup` to the `sched_switch` that puts it on a CPU is exactly
that wait, and grouping it by tier shows whether isolation holds (the critical tier's p99 stays
small while the batch tier's may grow). The agent captures a short trace with
`temper.host.tracefs.capture_sched_trace` and summarizes it here; this module only reads lines.

The input is the text the kernel prints in tracefs `trace` and `trace_pipe`:

    <idle>-0       [001] dNh4. 30784.140745: sched_wakeup: comm=foo pid=42 prio=120 target_cpu=001
    <idle>-0       [001] d..2. 30784.140760: sched_switch: prev_comm=swapper/1 prev_pid=0 ...
        ... prev_prio=120 prev_state=R ==> next_comm=foo next_pid=42 next_prio=120

Kernels differ in the columns before the timestamp: the latency flags are five characters since
5.x (`d..2.`, the last one migrate-disable), four before (`d..2`), absent with `noirq-info`; a
`(tgid)` column appears with `record-tgid`. The parser accepts all of these. Timestamps must be
in seconds with a fraction (the default `local` clock and the other time clocks); lines in any
other shape, other events, and `CPU:N [LOST M EVENTS]` markers are skipped and counted.

Matching rule: a wakeup of thread T is matched with the next `sched_switch` whose `next_pid` is T,
on any CPU. A second wakeup of T before T ran leaves the first unmatched (its run was lost or
filtered), and so does a wakeup with no run before the capture ended. Percentiles are
nearest-rank, in microseconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from temper.policy.errors import TraceRequestError

DEFAULT_SECONDS = 5.0  # long enough for several scheduler periods, short enough to ask often
MAX_SECONDS = 60.0  # sched events on a busy node run to MB/s; a minute is the most worth keeping
MAX_BYTES = 64 * 1024 * 1024  # the kernel ring buffer and the output file are both held to this

EventKind = Literal["sched_switch", "sched_wakeup", "sched_wakeup_new"]

_LINE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+"
    r"(?:\(\s*(?:\d+|-+)\)\s+)?"  # tgid column, with record-tgid
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:[^\s:]+\s+)?"  # latency flags: 'd..2.', 'd..2', 'dNh4.'; absent with noirq-info
    r"(?P<sec>\d+)\.(?P<frac>\d+):\s+"
    r"(?P<event>sched_switch|sched_wakeup_new|sched_wakeup):\s+"
    r"(?P<args>.*?)\s*$"
)
_NEXT_PID = re.compile(r"(?:^|\s)next_pid=(\d+)\s+next_prio=-?\d+\s*$")
_WOKEN_PID = re.compile(r"(?:^|\s)pid=(\d+)\s+prio=-?\d+(?:\s+success=\d+)?\s+target_cpu=\d+$")
_KINDS: dict[str, EventKind] = {
    "sched_switch": "sched_switch",
    "sched_wakeup": "sched_wakeup",
    "sched_wakeup_new": "sched_wakeup_new",
}
_PERCENTS = (50, 90, 99)


@dataclass(frozen=True)
class SchedEvent:
    """One parsed event. `tid` is the thread woken, or for `sched_switch` the one switched in."""

    kind: EventKind
    ts_ns: int
    cpu: int
    tid: int


@dataclass(frozen=True)
class SchedTrace:
    """The events of a trace text, in file order, and how many other lines were skipped."""

    events: tuple[SchedEvent, ...]
    skipped: int  # non-blank, non-comment lines that are not one of the three events


@dataclass(frozen=True)
class WakeToRun:
    """Wake-to-run delays of one tier. The figures are None when `count` is 0."""

    tier: str
    count: int  # wakeups followed by a run within the capture
    p50_us: float | None
    p90_us: float | None
    p99_us: float | None
    max_us: float | None
    unmatched: int  # wakeups never followed by a run within the capture


def check_trace_request(seconds: float, max_bytes: int | None) -> tuple[float, int]:
    """A capture request held to the bounds: (seconds, max_bytes); None means `MAX_BYTES`."""
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_SECONDS:
        raise TraceRequestError(
            f"seconds must be a finite number above 0 and at most {MAX_SECONDS:g}, got {seconds!r}"
        )
    if max_bytes is None:
        return seconds, MAX_BYTES
    if isinstance(max_bytes, bool) or not 0 < max_bytes <= MAX_BYTES:
        raise TraceRequestError(
            f"max_bytes must be between 1 and {MAX_BYTES} (64 MiB), got {max_bytes!r}"
        )
    return seconds, max_bytes


def parse_sched_line(line: str) -> SchedEvent | None:
    """The sched_switch, sched_wakeup or sched_wakeup_new event on `line`, else None."""
    match = _LINE.match(line)
    if match is None:
        return None
    kind = _KINDS[match["event"]]
    pattern = _NEXT_PID if kind == "sched_switch" else _WOKEN_PID
    tid = pattern.search(match["args"])
    if tid is None:
        return None
    ts_ns = int(match["sec"]) * 1_000_000_000 + int(match["frac"][:9].ljust(9, "0"))
    return SchedEvent(kind, ts_ns, int(match["cpu"]), int(tid[1]))


def parse_sched_trace(lines: Iterable[str]) -> SchedTrace:
    """Every event in `lines`; header comments and blank lines are neither events nor skipped."""
    events: list[SchedEvent] = []
    skipped = 0
    for line in lines:
        event = parse_sched_line(line)
        if event is not None:
            events.append(event)
        elif line.strip() and not line.lstrip().startswith("#"):
            skipped += 1
    return SchedTrace(tuple(events), skipped)


def summarize_wake_to_run(
    lines: Iterable[str], tier_of: Mapping[int, str], tiers: Sequence[str]
) -> tuple[WakeToRun, ...]:
    """Wake-to-run per tier, one row per name in `tiers`, in that order.

    `tier_of` maps a thread id to its tier; threads it does not name, or whose tier is not in
    `tiers`, are ignored.
    """
    order = tuple(dict.fromkeys(tiers))
    wanted = {tid: tier for tid, tier in tier_of.items() if tier in order}
    delays, unmatched = _match_wakeups(parse_sched_trace(lines).events, wanted)
    return tuple(_summary(tier, delays.get(tier, []), unmatched.get(tier, 0)) for tier in order)


def _match_wakeups(
    events: Sequence[SchedEvent], tier_of: Mapping[int, str]
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Delays (ns) of matched wakeups per tier, and the count of unmatched ones per tier."""
    pending: dict[int, int] = {}  # tid -> time of its wakeup not yet followed by a run
    delays: dict[str, list[int]] = {}
    unmatched: dict[str, int] = {}
    for event in sorted(events, key=lambda e: e.ts_ns):  # stable: file order breaks ties
        tier = tier_of.get(event.tid)
        if tier is None:
            continue
        if event.kind == "sched_switch":
            woke_ns = pending.pop(event.tid, None)
            if woke_ns is not None:
                delays.setdefault(tier, []).append(event.ts_ns - woke_ns)
            continue
        if event.tid in pending:
            unmatched[tier] = unmatched.get(tier, 0) + 1
        pending[event.tid] = event.ts_ns
    for tid in pending:
        unmatched[tier_of[tid]] = unmatched.get(tier_of[tid], 0) + 1
    return delays, unmatched


def _summary(tier: str, delays_ns: Sequence[int], unmatched: int) -> WakeToRun:
    if not delays_ns:
        return WakeToRun(tier, 0, None, None, None, None, unmatched)
    ordered = sorted(delays_ns)
    p50, p90, p99 = (_nearest_rank(ordered, pct) / 1000 for pct in _PERCENTS)
    return WakeToRun(tier, len(ordered), p50, p90, p99, ordered[-1] / 1000, unmatched)


def _nearest_rank(ordered: Sequence[int], pct: int) -> int:
    """Nearest-rank percentile of a non-empty ascending sequence (integer arithmetic)."""
    rank = max(-(-pct * len(ordered) // 100), 1)
    return ordered[rank - 1]
