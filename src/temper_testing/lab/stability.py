"""The lab's stability proof, guest side: scx_layered enabled and disabled under load.

    python -m temper_testing.lab.stability --scx-layered PATH --cycles N --out FILE
    python -m temper_testing.lab.stability --storm N --out FILE

Every sched_ext enable and disable flips the kernel's static keys, and that text patching is
what crashed the lab kernel under multi-threaded TCG with the host's QEMU 7.2 ("Oops: int3",
docs/lab.md). This job does N enable/disable cycles of the real scx_layered (one catch-all
layer: the patching is the same whatever the layers) while two processes ping-pong through a
pipe and one spins, so both vCPUs run kernel code through the patched sites. It writes what it
saw: each cycle's state and times, and every line of the kernel log that names an oops, a BUG,
a warning or a panic. `bench/lab_stability.py` boots many guests with it.

`--storm N` is the reproducer instead: it flips one static key (`kernel.sched_schedstats`) N
times under the same load, far more patching than any number of enables would do. It is how
the oops was pinned on multi-threaded TCG itself rather than on a CPU model (docs/lab.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from temper.host.sched_ext import SchedState, read_sched_ext
from temper_testing.lab.agentrun import stop_agent
from temper_testing.lab.pace import paced
from temper_testing.lab.proof import wait

ROOT = Path("/")
WORK = Path("/run/temper-lab-stability")
ATTACH_TIMEOUT_S = 240.0
HELD_S = 2.0  # attached this long before the disable
CONFIG = [{"name": "all", "matches": [[]], "kind": {"Open": {}}}]
KERNEL_TROUBLE = ("Oops", "BUG:", "WARNING:", "Kernel panic", "int3")


def kernel_trouble(dmesg: str) -> list[str]:
    """The kernel log's lines that report an oops, a BUG, a warning or a panic."""
    return [line for line in dmesg.splitlines() if any(word in line for word in KERNEL_TROUBLE)]


@contextmanager
def busy_kernel() -> Iterator[None]:
    """A pipe ping-pong pair and a spinner, so both vCPUs keep running kernel code."""
    ping = "import os\nr,w=os.pipe();r2,w2=os.pipe()\n" + (
        "if os.fork()==0:\n while True: os.read(r,1); os.write(w2,b'x')\n"
        "while True: os.write(w,b'x'); os.read(r2,1)\n"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", ping], start_new_session=True),
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True),
    ]
    try:
        yield
    finally:
        for child in children:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def cycle(scx_layered: Path, config: Path, log: Path) -> dict[str, Any]:
    """One enable, a short hold and a disable; what the kernel's state was at each step."""
    started = time.monotonic()
    with log.open("ab") as out:
        scheduler = subprocess.Popen([str(scx_layered), f"f:{config}"], stdout=out, stderr=out)
    attached = wait(
        lambda: read_sched_ext(ROOT).state is SchedState.ENABLED, paced(ATTACH_TIMEOUT_S)
    )
    attach_s = round(time.monotonic() - started, 1)
    time.sleep(HELD_S)
    code = stop_agent(scheduler, sig=signal.SIGINT)
    disabled = wait(lambda: read_sched_ext(ROOT).state is SchedState.DISABLED, paced(60))
    return {"attached": attached, "attach_s": attach_s, "exit": code, "disabled": disabled}


def storm(toggles: int, knob: Path = Path("/proc/sys/kernel/sched_schedstats")) -> None:
    """Flip the schedstats static key `toggles` times: text patching, as fast as it goes."""
    for _ in range(toggles):
        knob.write_text("1\n")
        knob.write_text("0\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temper_testing.lab.stability")
    parser.add_argument("--scx-layered", type=Path)
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--storm", type=int, default=0, help="flip a static key N times instead")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.storm and args.scx_layered is None:
        parser.error("--scx-layered is required unless --storm is given")
    WORK.mkdir(parents=True, exist_ok=True)
    config = WORK / "config.json"
    config.write_text(json.dumps(CONFIG))
    cycles = []
    with busy_kernel():
        storm(args.storm)
        for _ in range(0 if args.storm else args.cycles):
            cycles.append(cycle(args.scx_layered, config, WORK / "scx_layered.log"))
            print(f"cycle {len(cycles)}: {cycles[-1]}", flush=True)
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    report = {
        "kernel": os.uname().release,
        "cycles": cycles,
        "storm_toggles": args.storm,
        "kernel_trouble": kernel_trouble(dmesg),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    clean = all(c["attached"] and c["disabled"] for c in cycles)
    clean = clean and not report["kernel_trouble"]
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
