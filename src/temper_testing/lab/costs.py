"""What the emulator charges for the moves a scheduler makes, run as root inside the lab guest.

    python -m temper_testing.lab.costs --out FILE [--rounds 3] [--trips 2000]

A ping-pong over a UNIX socket pair, `--trips` round trips per measurement, in four placements:

- `same_cpu_processes`: two processes pinned to one CPU: every trip is two context switches
  between address spaces (what Temper's confined critical layer asks of an LC pod's processes);
- `same_cpu_threads`: the same with two threads of one process: switches without an address
  space change;
- `two_cpu_processes` and `two_cpu_threads`: each end pinned to its own CPU: every trip is two
  cross-CPU wake-ups of a CPU that went idle (what a spread-out placement asks).

Each placement is measured `--rounds` times, interleaved; the JSON gives every round's
microseconds per round trip. On hardware a round trip costs a few microseconds in every
placement and a cross-CPU wake-up costs little more than a switch; under TCG the ratios between
placements are what tells a lab figure's emulator share from its scheduler share (docs/lab.md).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

PLACEMENTS = ("same_cpu_processes", "same_cpu_threads", "two_cpu_processes", "two_cpu_threads")
SAME_CPU = 1  # the last CPU of the lab's 2: where Temper's critical layer sits
OTHER_CPU = 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trips", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {p: [] for p in PLACEMENTS}
    for n in range(args.rounds):
        for placement in PLACEMENTS:
            us = round_trip_us(placement, args.trips)
            figures[placement].append(us)
            print(f"round {n}: {placement}: {us} us per round trip", flush=True)
    args.out.write_text(json.dumps({"trips": args.trips, "us_per_round_trip": figures}))
    return 0


def round_trip_us(placement: str, trips: int) -> float:
    """Microseconds per round trip between two ends placed as `placement` says."""
    here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    echo_cpu = SAME_CPU if placement.startswith("same_cpu") else OTHER_CPU
    if placement.endswith("threads"):
        thread = threading.Thread(target=_pinned, args=(echo_cpu, lambda: _echo(there, trips)))
        thread.start()
        elapsed = _pinned(SAME_CPU, lambda: _ping(here, trips))
        thread.join()
    else:
        pid = os.fork()
        if pid == 0:
            _pinned(echo_cpu, lambda: _echo(there, trips))
            os._exit(0)
        elapsed = _pinned(SAME_CPU, lambda: _ping(here, trips))
        os.waitpid(pid, 0)
    here.close()
    there.close()
    return round(elapsed / trips * 1e6, 1)


def _pinned(cpu: int, work: Callable[[], float | None]) -> float:
    os.sched_setaffinity(0, {cpu})  # 0: the calling thread
    return work() or 0.0


def _ping(sock: socket.socket, trips: int) -> float:
    sock.send(b"x")  # one untimed trip: both ends are running and placed
    sock.recv(1)
    start = time.perf_counter()
    for _ in range(trips):
        sock.send(b"x")
        sock.recv(1)
    return time.perf_counter() - start


def _echo(sock: socket.socket, trips: int) -> None:
    for _ in range(trips + 1):
        sock.send(sock.recv(1))


if __name__ == "__main__":
    raise SystemExit(main())
