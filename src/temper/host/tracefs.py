"""Bounded scheduler trace capture from tracefs, into an ftrace text file Perfetto opens.

Why a private instance: `tracefs/instances/<name>` is a ring buffer, event set and pid filter of
our own, so a capture never disturbs the node's top-level buffer or another tool's tracing, and
`rmdir` frees every byte of it. A directory left by a crashed capture is removed first.

Why ftrace text: it is what the kernel prints in the instance's `trace` file, header included
(`# tracer: nop`, `# entries-in-buffer/entries-written: ...`, the column legend), so the copy
needs no encoder of ours; `temper.policy.schedtrace` reads it, and the Perfetto UI and its
trace_processor open it as the "Linux ftrace textual format" (best-effort legacy support, per
https://perfetto.dev/docs/getting-started/other-formats).

Bounds: the ring is sized so all CPUs together stay within `max_bytes`, with `overwrite` off,
so it keeps the first events and counts the rest as dropped (`lost_events`, from each CPU's
`stats`). The text is larger than the ring's binary records, so the copy to `out` stops at
`max_bytes` on a line boundary and says so (`truncated`).

Tracing stays off until the configuration is complete: a new instance starts with `tracing_on`
at 1. The pid filter (`set_event_pid`) keeps a `sched_switch` when either side is a listed
thread, and a wakeup when the woken thread is listed, so a wakeup and the switch that runs it
are both kept. A kernel may still miss one side: on the 6.18 Firecracker VM this was written on,
switches *out of the idle task on CPU 1* were never recorded (CPU 0's were), with or without a
pid filter; wake-to-run then reports those wakeups as unmatched rather than guessing.

One capture runs at a time in this process (`TraceBusy`): the agent calls this blocking function
from a worker thread. The request bounds are checked by the caller with
`temper.policy.schedtrace.check_trace_request`; this function refuses seconds, max_bytes or an
instance name no request could mean (ValueError). A pid filter it cannot apply (none, more than
`MAX_PIDS`, ids out of range) and failures of tracefs are `TracefsError`s naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from temper.host.errors import TraceBusy, TracefsError
from temper.policy.schedtrace import parse_sched_line

MAX_PIDS = 100_000  # far beyond one node's pods' threads; the filter is written in 4 KiB parts
PID_MAX_LIMIT = 4 * 1024 * 1024  # the kernel's ceiling for pid_max; tracefs refuses more (EPERM)
EVENTS = ("sched_switch", "sched_wakeup", "sched_wakeup_new")

_CAPTURE_LOCK = threading.Lock()
_CPU_DIR = re.compile(r"cpu\d+")
_LOST_KEYS = ("overrun", "dropped events")  # lost with overwrite on / off
_PID_CHUNK = 4096  # bytes per write to set_event_pid; each write appends to the filter


@dataclass(frozen=True)
class TraceCapture:
    """A finished capture: the file written and what it holds."""

    path: Path
    size_bytes: int  # of the file at `path`, at most max_bytes
    events: int  # sched event lines in the file
    truncated: bool  # the copy stopped at max_bytes before the end of the trace
    lost_events: int  # events the kernel could not keep (ring full), summed over CPUs
    seconds: float  # how long tracing was on, measured


def capture_sched_trace(
    tracefs: Path,
    out: Path,
    *,
    seconds: float,
    max_bytes: int,
    pids: Collection[int] | None,
    instance: str = "temper",
) -> TraceCapture:
    """Trace sched_switch/sched_wakeup(_new) for `seconds` into `out`, at most `max_bytes`.

    `tracefs` is where tracefs is mounted (the node's /sys/kernel/tracing). `pids` limits the
    events to those threads (all threads when None). Blocks for `seconds`.
    """
    _check_arguments(seconds, max_bytes, instance)
    inst = tracefs / "instances" / instance
    if pids is not None:
        _check_pids(inst / "set_event_pid", pids)
    if not _CAPTURE_LOCK.acquire(blocking=False):
        raise TraceBusy(inst)
    try:
        _require_mounted(tracefs)
        _remove_stale(inst)
        return _capture_in(inst, out, seconds, max_bytes, pids)
    finally:
        _CAPTURE_LOCK.release()


def _check_arguments(seconds: float, max_bytes: int, instance: str) -> None:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be a finite number above 0, got {seconds!r}")
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be above 0, got {max_bytes!r}")
    if not instance or "/" in instance or instance in (".", ".."):
        raise ValueError(f"instance must be a plain directory name, got {instance!r}")


def _check_pids(path: Path, pids: Collection[int]) -> None:
    """A pid filter the kernel can take: 1 to MAX_PIDS ids (an empty filter would trace all)."""
    if not 0 < len(pids) <= MAX_PIDS:
        raise TracefsError(
            path, f"give 1 to {MAX_PIDS} thread ids (or None for all), not {len(pids)}"
        )
    if any(not 0 < pid <= PID_MAX_LIMIT for pid in pids):
        raise TracefsError(path, f"thread ids must be from 1 to {PID_MAX_LIMIT}")


def _require_mounted(tracefs: Path) -> None:
    if not tracefs.is_dir():
        raise TracefsError(tracefs, "does not exist; mount tracefs there first")
    if not (tracefs / "instances").is_dir() or not (tracefs / "tracing_on").is_file():
        raise TracefsError(
            tracefs, f"tracefs is not mounted here (mount -t tracefs nodev {tracefs})"
        )


def _remove_stale(inst: Path) -> None:
    """Remove an instance left by a capture that crashed before its own rmdir."""
    if inst.is_dir():
        _rmdir(inst)


def _capture_in(
    inst: Path, out: Path, seconds: float, max_bytes: int, pids: Collection[int] | None
) -> TraceCapture:
    try:
        inst.mkdir()
    except OSError as exc:
        raise _failed(inst, "cannot create the trace instance", exc) from exc
    try:
        _configure(inst, max_bytes, pids)
        traced_s = _record(inst, seconds)
        size_bytes, events, truncated = _copy_trace(inst / "trace", out, max_bytes)
        lost = read_lost_events(inst)
    except BaseException:
        _rmdir_quietly(inst)
        raise
    _rmdir(inst)
    return TraceCapture(out, size_bytes, events, truncated, lost, traced_s)


def _configure(inst: Path, max_bytes: int, pids: Collection[int] | None) -> None:
    _write(inst / "tracing_on", "0")
    _size_ring(inst, max_bytes)
    _write(inst / "options" / "overwrite", "0")
    for event in EVENTS:
        _write(inst / "events" / "sched" / event / "enable", "1")
    if pids is not None:
        _write_pids(inst / "set_event_pid", pids)


def _size_ring(inst: Path, max_bytes: int) -> None:
    """Per-CPU buffer_size_kb so all CPUs stay within max_bytes, once corrected for rounding."""
    cpus = read_cpu_count(inst)
    budget_kb = max_bytes // 1024
    want_kb = max(budget_kb // cpus, 1)
    _write(inst / "buffer_size_kb", str(want_kb))
    got_kb = _read_int(inst / "buffer_size_kb")  # the kernel rounds up to whole sub-buffers
    if got_kb * cpus > budget_kb and want_kb > 1:
        _write(inst / "buffer_size_kb", str(max(want_kb - (got_kb - want_kb), 1)))


def _record(inst: Path, seconds: float) -> float:
    _write(inst / "tracing_on", "1")
    started = time.monotonic()
    try:
        time.sleep(seconds)
    finally:
        _write(inst / "tracing_on", "0")
    return time.monotonic() - started


def _copy_trace(trace: Path, out: Path, max_bytes: int) -> tuple[int, int, bool]:
    """Stream `trace` to `out` up to max_bytes on a line boundary: (bytes, events, truncated)."""
    try:
        source = trace.open("rb")
    except OSError as exc:
        raise _failed(trace, "cannot read the trace", exc) from exc
    with source:
        try:
            with out.open("wb") as sink:
                return _copy_lines(source, sink, max_bytes)
        except OSError as exc:
            raise _failed(out, f"cannot copy {trace} here", exc) from exc


def _copy_lines(source: BinaryIO, sink: BinaryIO, max_bytes: int) -> tuple[int, int, bool]:
    written = events = 0
    for line in source:
        if written + len(line) > max_bytes:
            return written, events, True
        sink.write(line)
        written += len(line)
        events += parse_sched_line(line.decode(errors="replace")) is not None
    return written, events, False


def read_cpu_count(inst: Path) -> int:
    """CPUs with a ring buffer in a tracefs instance (its `per_cpu/cpuN` directories)."""
    try:
        names = [entry.name for entry in os.scandir(inst / "per_cpu")]
    except OSError as exc:
        raise _failed(inst / "per_cpu", "cannot list the per-CPU buffers", exc) from exc
    count = sum(1 for name in names if _CPU_DIR.fullmatch(name))
    if count == 0:
        raise TracefsError(inst / "per_cpu", "has no cpuN directories")
    return count


def read_lost_events(inst: Path) -> int:
    """Events lost over all CPUs: `overrun` plus `dropped events` of each per_cpu/cpuN/stats.

    A stats file that cannot be read counts 0: the figure is a report, not a precondition.
    """
    lost = 0
    for stats in sorted((inst / "per_cpu").glob("cpu*/stats")):
        try:
            text = stats.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in _LOST_KEYS and value.strip().isdigit():
                lost += int(value)
    return lost


def _write_pids(path: Path, pids: Collection[int]) -> None:
    """Write the pid filter in chunks cut at pid boundaries; each write appends to the filter."""
    chunk: list[str] = []
    size = 0
    for pid in sorted(set(pids)):
        chunk.append(str(pid))
        size += len(chunk[-1]) + 1
        if size >= _PID_CHUNK:
            _write(path, " ".join(chunk), append=True)
            chunk, size = [], 0
    if chunk:
        _write(path, " ".join(chunk), append=True)


def _write(path: Path, value: str, *, append: bool = False) -> None:
    """Write a tracefs control file; never create one (a missing file is an error)."""
    data = (value + "\n").encode()
    flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags)
        try:
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
    except OSError as exc:
        raise _failed(path, f"cannot write {value[:40]!r}", exc) from exc


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise TracefsError(path, f"cannot read a number: {exc}") from exc


def _rmdir(inst: Path) -> None:
    try:
        inst.rmdir()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _failed(inst, "cannot remove the trace instance", exc) from exc


def _rmdir_quietly(inst: Path) -> None:
    """Remove the instance on the way out of a failure, which is the error worth reporting."""
    with contextlib.suppress(OSError):
        inst.rmdir()


def _failed(path: Path, what: str, exc: OSError) -> TracefsError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        reason += " (tracing needs root or CAP_SYS_ADMIN)"
    elif exc.errno == errno.EBUSY:
        reason += " (a file in it is still open, e.g. by a trace_pipe reader)"
    return TracefsError(path, f"{what}: {reason}")
