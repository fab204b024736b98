"""The lab guest's pace: how much slower than a quiet lab guest this one runs, measured once.

A TCG guest's speed follows its host's: on a busy 2-core host the same guest booted in 14.7 s
where a quiet one boots in 7 s, and two workload interpreters that start in about a second
outran a fixed 30 s wait (CI, 2026-12-03). So the lab's waits on the guest's own work
(interpreters ready, scx_layered attached, the agent settled) are not fixed: each is a time
measured on a quiet lab guest, multiplied by `pace()`.

`pace()` times one Python interpreter start that imports the lab's workload module, the same
start that `temper_testing.lab.processes` waits for most often, and divides it by the same
start on a quiet lab guest (`QUIET_START_S`). It is measured once per process, at the first
wait, and is never below 1: a host (0.05 s per start) or a fast guest keeps the quiet times. The
waits meant to measure kernel time (how long scx_layered must stay attached under load) are not
paced.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time

from temper_testing.checkout import src_dir

# One `python -c "import temper_testing.lab.workload"` in the default lab guest (4 vCPUs, QEMU 10,
# multi-threaded TCG) on a quiet host: median 2.0 s over 25 starts in 5 boots, range 1.3-3.4 s
# (the slow end is a fresh checkout, without bytecode caches, as CI has).
QUIET_START_S = 2.0
PROBE_TIMEOUT_S = 600.0  # a probe that takes this long is a hung guest, not a slow one


@functools.cache
def pace() -> float:
    """This machine's slowness against a quiet lab guest (≥ 1), measured at the first call."""
    return max(1.0, interpreter_start_s() / QUIET_START_S)


def paced(quiet_s: float) -> float:
    """A wait of `quiet_s` on a quiet lab guest, at this machine's pace."""
    return quiet_s * pace()


def interpreter_start_s() -> float:
    """Wall time of one interpreter start importing the workload module, as a workload starts."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import temper_testing.lab.workload"],
        check=True,
        stdin=subprocess.DEVNULL,
        env=workload_env(),
        timeout=PROBE_TIMEOUT_S,
    )
    return time.monotonic() - started


def workload_env() -> dict[str, str]:
    """Our environment, with the checkout's `temper` and `temper_testing` importable even where
    they are not installed (a guest)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src_dir()), env.get("PYTHONPATH")]))
    return env
