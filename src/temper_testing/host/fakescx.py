"""A fake scx_layered child for tests: the fake beside the `SchedulerProcess` port.

    python -m temper_testing.host.fakescx --root ROOT [--mode MODE] [--after-s S] f:CONFIG

It plays the parts of scx_layered and of the kernel against a fake sysfs under ROOT
(`write_fake_sched_ext`): attaching sets `state` to enabled and names our ops in `root/ops`,
detaching sets it back. Modes stand in for faults a real kernel cannot be made to produce on
demand (docs/reliability.md rows A2, A3, A12):

    ok            attach; on SIGTERM/SIGINT detach and exit 0
    fail-fast     print a verifier failure and exit 1 without attaching
    stall         attach, then after --after-s detach with "runnable task stall", exit 1
    ignore-term   attach and ignore SIGTERM (SIGKILL ends it; the fake kernel stays enabled)
    slow-start    wait --after-s before attaching, then behave as ok

With `--attach-when-free FILE` (our scx_layered patch) it "loads", creates FILE, waits until the
fake kernel runs no scheduler, and attaches.

Like the real one it refuses to start while another scheduler is loaded, prints what it parsed
badly, and exits with "disabled by sysrq-S" when the (fake) kernel disables it underneath.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from temper.host.sched_ext import SchedState, read_sched_ext
from temper_testing.host.fakesys import write_fake_sched_ext

FAKE_OPS = "layered_1.1.2_fake"
MODES = ("ok", "fail-fast", "stall", "ignore-term", "slow-start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fakescx")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--after-s", type=float, default=0.5)
    parser.add_argument("--layer-order-by-weight", action="store_true")  # accepted, as the real
    parser.add_argument("--attach-when-free", type=Path)
    parser.add_argument("spec")
    args = parser.parse_args(argv)
    if not _config_parses(args.spec):
        return 1
    status = read_sched_ext(args.root)
    if status.state is not SchedState.DISABLED and args.attach_when_free is None:
        print("Error: another sched_ext scheduler is already running", flush=True)
        return 1
    if args.mode == "fail-fast":
        print("libbpf: prog 'layered_enqueue': failed to load: -22 (verifier)", flush=True)
        print("Error: failed to load BPF program", flush=True)
        return 1
    if args.mode == "slow-start":
        time.sleep(args.after_s)
    if args.attach_when_free is not None:
        args.attach_when_free.write_text("loaded\n")
        while (status := read_sched_ext(args.root)).state is not SchedState.DISABLED:
            time.sleep(0.005)
    return _run_attached(args.root, args.mode, args.after_s, status.enable_seq or 0)


def _config_parses(spec: str) -> bool:
    path = Path(spec.removeprefix("f:"))
    try:
        json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"Error: Failed to parse specs[0] ({spec!r}): {exc}", flush=True)
        return False
    return True


def _run_attached(root: Path, mode: str, after_s: float, seq: int) -> int:
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    # Handlers first: the supervisor may signal as soon as it sees the fake kernel attached (on
    # a busy machine, an ignore-term child died of a SIGTERM sent in between).
    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore-term" else stop)
    signal.signal(signal.SIGINT, stop)
    write_fake_sched_ext(root, state="enabled", ops=FAKE_OPS, enable_seq=seq + 1)
    print("Layered Scheduler Attached. Run `scx_layered --monitor` for metrics.", flush=True)
    deadline = time.monotonic() + after_s
    while not stopping:
        time.sleep(0.02)
        if read_sched_ext(root).state is SchedState.DISABLED:  # disabled under us: SysRq-S
            print("EXIT: disabled by sysrq-S", flush=True)
            return 1
        if mode == "stall" and time.monotonic() >= deadline:
            write_fake_sched_ext(root, state="disabled", ops=None, enable_seq=seq + 1)
            print("EXIT: runnable task stall (fake)", flush=True)
            return 1
    write_fake_sched_ext(root, state="disabled", ops=None, enable_seq=seq + 1)
    print("EXIT: unregistered from user space", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
