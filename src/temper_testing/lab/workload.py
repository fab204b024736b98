"""The program a simulated container runs: named threads that sleep or spin.

    python -m temper_testing.lab.workload [--comm NAME] [--thread COMM[:spin|:sleep]]...
                                          [--start-fd N] [--ready-fd N]

scx_layered matches tasks by cgroup and by comm, so a simulated container needs processes whose
threads carry chosen names. This program, started by `temper_testing.lab.node.SimulatedNode`:

1. names its main thread `--comm` (the process comm, what `PcommPrefix` matches);
2. waits for one byte on `--start-fd`: the parent moves the process into its container cgroup
   first, so every thread started below is born there (no window in a wrong cgroup);
3. starts one thread per `--thread`, each naming itself by writing its own
   `/proc/self/task/<tid>/comm` (at most 15 bytes: the kernel's `TASK_COMM_LEN` less the NUL),
   then sleeping (waking every WAKE_S) or spinning in a busy loop;
4. writes one byte to `--ready-fd` once every thread carries its name;
5. reads `--start-fd` until end of file and exits then: the pipe is a lifeline, so the workload
   dies with its parent even when the parent is killed before it can clean up.

Spinning threads of one process share one CPU at most: Python's GIL lets one thread run
bytecode at a time. A container that should keep N CPUs busy runs N processes instead
(`Container.spin_processes`).

Only the standard library is imported, so a child starts as fast as Python can.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

COMM_MAX_BYTES = 15  # TASK_COMM_LEN (16) less the terminating NUL; longer names are cut
_MODES = {"spin": True, "sleep": False}
# Sleeping threads wake this often, as a service's idle threads wake on timers. It matters:
# scx_layered puts a task in a layer when the task next runs, so a thread that never wakes
# after the scheduler attaches is in no layer at all (scx_layered 1.1.2 main.bpf.c,
# maybe_refresh_layer on the enqueue path).
WAKE_S = 0.05


@dataclass(frozen=True)
class ThreadSpec:
    """One thread to start: its comm, and whether it spins (else it sleeps)."""

    comm: str
    spin: bool = False

    @property
    def argument(self) -> str:
        """This spec as `--thread` takes it; the mode is always explicit, so any comm works."""
        return f"{self.comm}:{'spin' if self.spin else 'sleep'}"


def check_comm(comm: str) -> str:
    """`comm` unchanged if the kernel keeps it intact as a task name; ValueError otherwise."""
    size = len(comm.encode())
    if not 0 < size <= COMM_MAX_BYTES or "\n" in comm or "\0" in comm:
        raise ValueError(
            f"comm {comm!r}: want 1..{COMM_MAX_BYTES} bytes without newline or NUL, got {size}"
        )
    return comm


def parse_thread_spec(text: str) -> ThreadSpec:
    """`COMM`, `COMM:sleep` or `COMM:spin`; a colon followed by anything else is in the comm."""
    comm, colon, mode = text.rpartition(":")
    if not colon or mode not in _MODES:
        comm, mode = text, "sleep"
    return ThreadSpec(check_comm(comm), _MODES[mode])


def set_comm(tid: int, comm: str) -> None:
    """Name the calling process's thread `tid`."""
    with open(f"/proc/self/task/{tid}/comm", "w", encoding="utf-8") as file:
        file.write(comm)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.comm is not None:
        set_comm(threading.get_native_id(), args.comm)
    if args.start_fd is not None and not os.read(args.start_fd, 1):
        return 0  # the parent gave up before placing us
    failures = _start_threads(args.thread, args.wake_s)
    if failures:
        print("workload: " + "; ".join(failures), file=sys.stderr, flush=True)
        os._exit(1)  # spinning daemon threads would stall a normal interpreter shutdown
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"r")
        os.close(args.ready_fd)
    _wait_for_end(args.start_fd, args.wake_s)
    return 0


def _start_threads(specs: Sequence[ThreadSpec], wake_s: float) -> list[str]:
    """Start the threads and wait until each has named itself; the failures, if any."""
    named = threading.Semaphore(0)
    failures: list[str] = []
    for spec in specs:
        thread = threading.Thread(
            target=_run_thread, args=(spec, wake_s, named, failures), daemon=True
        )
        thread.start()
    for _ in specs:
        named.acquire()
    return failures


def _run_thread(
    spec: ThreadSpec, wake_s: float, named: threading.Semaphore, failures: list[str]
) -> None:
    try:
        set_comm(threading.get_native_id(), spec.comm)
    except OSError as exc:
        failures.append(f"cannot name a thread {spec.comm!r}: {exc}")
        named.release()
        return
    named.release()
    if spec.spin:
        while True:
            pass
    while True:
        time.sleep(wake_s)


def _wait_for_end(lifeline_fd: int | None, wake_s: float) -> None:
    """Wait until the lifeline closes (forever without one), then exit with every thread.

    Like every sleeping thread here, the main thread wakes every `wake_s`.
    """
    while True:
        if lifeline_fd is not None and select.select([lifeline_fd], [], [], wake_s)[0]:
            if not os.read(lifeline_fd, 4096):
                os._exit(0)  # spinning daemon threads would stall a normal interpreter shutdown
        elif lifeline_fd is None:
            time.sleep(wake_s)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m temper_testing.lab.workload",
        description="Run named threads that sleep or spin, for a simulated container.",
    )
    parser.add_argument("--comm", type=_comm_argument, help="name of the main thread")
    parser.add_argument(
        "--thread",
        type=_thread_argument,
        action="append",
        default=[],
        metavar="COMM[:spin|:sleep]",
        help="start a thread with this comm that sleeps (default) or spins; repeatable",
    )
    parser.add_argument(
        "--wake-s", type=float, default=WAKE_S, help=f"sleeping threads wake this often ({WAKE_S})"
    )
    parser.add_argument("--start-fd", type=int, help="wait for a byte here before the threads")
    parser.add_argument("--ready-fd", type=int, help="write a byte here once threads are named")
    return parser


def _comm_argument(text: str) -> str:
    try:
        return check_comm(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _thread_argument(text: str) -> ThreadSpec:
    try:
        return parse_thread_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


if __name__ == "__main__":
    sys.exit(main())
