"""The processes inside the interference benchmark's pods (`temper.lab.interference`).

    python -m temper.lab.lcworkload --role server|client|batch --cgroup PATH [...]

Each moves itself into its container's cgroup (`cgroup.procs`) before it does any work:

- `server`: answers each request on a UNIX seqpacket socket after `busy(--iterations)`;
- `client`: an open-loop driver in the same container; for each `run <duration_s> <period_us>
  <outfile>` line on stdin it sends one request per period at scheduled times, writes the
  latencies (from each request's *scheduled* send time, so queueing and a late client both
  count) to outfile, and answers `done`;
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
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
DRAIN_S = 10.0  # how long the client waits for outstanding responses after its last send
BATCH_CHUNK = 2000  # spin iterations between clock reads
PUBLISH_S = 0.1  # how often a spinner publishes its count
_MSG = struct.Struct("<q")


def busy(iterations: int) -> int:
    """The LC server's unit of work: a plain interpreter loop, so its cost is pure CPU."""
    total = 0
    for i in range(iterations):
        total += i
    return total


def _join_cgroup(path: str) -> None:
    (CGROUP_ROOT / path.strip("/") / "cgroup.procs").write_text(f"{os.getpid()}\n")


def _role_server(sock: socket.socket, iterations: int) -> None:
    while True:
        data = sock.recv(_MSG.size)
        if not data:
            return
        busy(iterations)
        sock.send(data)


def _role_client(sock: socket.socket) -> None:
    """Read `run <duration_s> <period_us> <outfile>` lines on stdin; answer `done` per run."""
    seq = 0
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        duration_s, period_us, out = float(words[1]), int(words[2]), Path(words[3])
        result, seq = _open_loop(sock, duration_s, period_us / 1e6, seq)
        out.write_text(json.dumps(result))
        print("done", flush=True)


def _open_loop(
    sock: socket.socket, duration_s: float, period_s: float, seq: int
) -> tuple[dict[str, Any], int]:
    """Send one request per period at scheduled times; latency is from the scheduled time."""
    count = int(duration_s / period_s)
    start = time.monotonic() + 0.05
    scheduled: dict[int, float] = {}
    latencies: list[int] = []
    late_sends = 0
    sent = 0
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        deadline = start + count * period_s + DRAIN_S
        while (sent < count or scheduled) and time.monotonic() < deadline:
            now = time.monotonic()
            while sent < count and start + sent * period_s <= now:
                due = start + sent * period_s
                if now - due > period_s:
                    late_sends += 1
                scheduled[seq] = due
                sock.send(_MSG.pack(seq))
                seq += 1
                sent += 1
            wake = start + sent * period_s if sent < count else deadline
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
        _role_server(sock, args.iterations)
    else:
        _role_client(sock)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temper.lab.lcworkload")
    parser.add_argument("--role", choices=("server", "client", "batch"), required=True)
    parser.add_argument("--cgroup", required=True)
    parser.add_argument("--fd", type=int)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--counter")
    return run_role(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
