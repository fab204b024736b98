"""The processes inside the interference benchmark's pods (`temper_testing.lab.interference`).

    python -m temper_testing.lab.lcworkload --role server|client|batch --cgroup PATH [...]

Each moves itself into its container's cgroup (`cgroup.procs`) before it does any work:

- `server`: answers each request on a UNIX seqpacket socket after `busy(--iterations)`; with
  `--workers N` it forks N-1 more processes that serve the same socket, so up to N requests
  are worked on at once (a service's worker pool);
- `client`: an open-loop driver in the same container; for each `run <duration_s> <period_us>
  <burst> <outfile>` line on stdin it sends `burst` requests at once every period, at
  scheduled times, writes the latencies (from each request's *scheduled* send time, so
  queueing, a late client and a request waiting behind its own burst all count) to outfile,
  and answers `done`;
- `batch`: spins, publishing (iterations, CLOCK_MONOTONIC time) to `--counter` every 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
DRAIN_S = 10.0  # how long the client waits for outstanding responses after its last send
BATCH_CHUNK = 2000  # spin iterations between clock reads
PUBLISH_S = 0.1  # how often a spinner publishes its count
_MSG = struct.Struct("<q")


@dataclass(frozen=True)
class LcProfile:
    """One latency-critical service shape: its worker pool and its arrivals
    (`temper_testing.lab.interference` drives each; its docstring says why these two)."""

    name: str
    workers: int
    burst: int  # requests sent at once, every period
    period_us: int
    work_us: int  # busy work per request, calibrated on the idle node

    def settings(self) -> dict[str, int]:
        return {
            "workers": self.workers,
            "burst": self.burst,
            "period_us": self.period_us,
            "work_us": self.work_us,
        }


# Under TCG a request costs the pod several ms of guest CPU whatever its calibrated work (the
# client, the server and their wake-ups are emulated too; the LC table in docs/lab.md), so
# the arrival rates keep the pod at about a quarter of its one CPU: a service with headroom,
# whose tail shows what the scheduler does to it, not its own queue at the edge of saturation.
PROFILES = (
    LcProfile("light", workers=1, burst=1, period_us=25_000, work_us=300),
    LcProfile("heavy", workers=4, burst=4, period_us=100_000, work_us=1500),
)


def busy(iterations: int) -> int:
    """The LC server's unit of work: a plain interpreter loop, so its cost is pure CPU."""
    total = 0
    for i in range(iterations):
        total += i
    return total


def _join_cgroup(path: str) -> None:
    (CGROUP_ROOT / path.strip("/") / "cgroup.procs").write_text(f"{os.getpid()}\n")


def _role_server(sock: socket.socket, iterations: int, workers: int) -> None:
    for _ in range(workers - 1):
        if os.fork() == 0:
            break  # a worker: serve like the first; all share the socket
    while True:
        data = sock.recv(_MSG.size)
        if not data:
            return
        busy(iterations)
        sock.send(data)


def _role_client(sock: socket.socket) -> None:
    """Read `run <duration_s> <period_us> <burst> <outfile>` lines; answer `done` per run."""
    seq = 0
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        duration_s, period_us, burst = float(words[1]), int(words[2]), int(words[3])
        result, seq = _open_loop(sock, duration_s, period_us / 1e6, burst, seq)
        out = Path(words[4])
        out.write_text(json.dumps(result))
        print("done", flush=True)


def _open_loop(
    sock: socket.socket, duration_s: float, period_s: float, burst: int, seq: int
) -> tuple[dict[str, Any], int]:
    """Send `burst` requests per period at scheduled times; latency is from the scheduled time."""
    count = int(duration_s / period_s) * burst
    start = time.monotonic() + 0.05
    scheduled: dict[int, float] = {}
    latencies: list[int] = []
    late_sends = 0
    sent = 0
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        deadline = start + (count // burst) * period_s + DRAIN_S
        while (sent < count or scheduled) and time.monotonic() < deadline:
            now = time.monotonic()
            while sent < count and start + (sent // burst) * period_s <= now:
                due = start + (sent // burst) * period_s
                if now - due > period_s:
                    late_sends += 1
                scheduled[seq] = due
                sock.send(_MSG.pack(seq))
                seq += 1
                sent += 1
            wake = start + (sent // burst) * period_s if sent < count else deadline
            if selector.select(max(wake - time.monotonic(), 0)):
                while True:
                    try:
                        data = sock.recv(_MSG.size, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    got = time.monotonic()
                    due_at = scheduled.pop(_MSG.unpack(data)[0], None)
                    if due_at is not None:
                        latencies.append(round((got - due_at) * 1e6))
    end = time.monotonic()
    lost = len(scheduled)
    # A lost response waited at least until the end: count it with that lower bound.
    latencies += [round((end - due) * 1e6) for due in scheduled.values()]
    return {"latencies_us": latencies, "lost": lost, "late_sends": late_sends, "sent": sent}, seq


def _role_batch(counter: Path) -> None:
    fd = os.open(counter, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    count = 0
    os.pwrite(fd, f"0 {time.monotonic():.6f}\n".ljust(48).encode(), 0)
    print("ready", flush=True)  # only once the counter file holds a sample
    publish = time.monotonic() + PUBLISH_S
    while True:
        for _ in range(BATCH_CHUNK):
            pass
        count += BATCH_CHUNK
        now = time.monotonic()
        if now >= publish:
            os.pwrite(fd, f"{count} {now:.6f}\n".ljust(48).encode(), 0)
            publish = now + PUBLISH_S


def run_role(args: argparse.Namespace) -> int:
    _join_cgroup(args.cgroup)
    if args.role == "batch":
        _role_batch(Path(args.counter))
        return 0
    sock = socket.socket(fileno=args.fd)
    print("ready", flush=True)
    if args.role == "server":
        _role_server(sock, args.iterations, args.workers)
    else:
        _role_client(sock)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temper_testing.lab.lcworkload")
    parser.add_argument("--role", choices=("server", "client", "batch"), required=True)
    parser.add_argument("--cgroup", required=True)
    parser.add_argument("--fd", type=int)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--counter")
    return run_role(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
