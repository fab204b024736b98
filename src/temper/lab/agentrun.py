"""How the lab's guest programs (proof, interference benchmark) start `temper-agent`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

# scx_layered attaches in 18-35 s under single-threaded TCG (docs/lab.md); leave room.
LAB_START_TIMEOUT_S = 180


def agent_argv(work: Path, scx_layered: Path, profiles: Sequence[Path] = ()) -> list[str]:
    """temper-agent over `work/pods`, writing its config under `work/state`."""
    argv = [
        sys.executable,
        "-m",
        "temper.agent.main",
        "--pods-dir",
        str(work / "pods"),
        "--state-dir",
        str(work / "state"),
        "--scx-layered",
        str(scx_layered),
        "--start-timeout-s",
        str(LAB_START_TIMEOUT_S),
    ]
    for profile in profiles:
        argv += ["--profile", str(profile)]
    return argv
