"""How the lab's guest programs start, watch and stop `temper-agent`."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from temper.host.sched_ext import read_sched_ext
from temper_testing.lab.pace import paced

# scx_layered attaches in 15-35 s in a quiet lab guest (docs/lab.md); the agent is given this
# at the guest's pace (`temper_testing.lab.pace`), and so are the programs that wait for it.
LAB_START_TIMEOUT_S = 180
AGENT_LOG = "agent.log"


def agent_argv(
    work: Path, scx_layered: Path, profiles: Sequence[Path] = (), extra: Sequence[str] = ()
) -> list[str]:
    """temper-agent over `work/pods`, writing its config under `work/state` and its API's
    assignments and audit log under `work/data`; its API socket is `work/state/api.sock`.
    `extra` flags come last."""
    argv = [
        sys.executable,
        "-m",
        "temper.agent.main",
        "--pods-dir",
        str(work / "pods"),
        "--state-dir",
        str(work / "state"),
        "--data-dir",
        str(work / "data"),
        "--scx-layered",
        str(scx_layered),
        "--start-timeout-s",
        f"{paced(LAB_START_TIMEOUT_S):.0f}",
    ]
    for profile in profiles:
        argv += ["--profile", str(profile)]
    return [*argv, *extra]


def start_agent(
    work: Path, scx_layered: Path, profiles: Sequence[Path] = (), extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start temper-agent; its output (one JSON line per event) is appended to work/agent.log."""
    with (work / AGENT_LOG).open("ab") as log:
        return subprocess.Popen(
            agent_argv(work, scx_layered, profiles, extra), stdout=log, stderr=subprocess.STDOUT
        )


def stop_agent(
    agent: subprocess.Popen[bytes], timeout_s: float = 60, sig: int = signal.SIGTERM
) -> int | None:
    """SIGTERM the agent (it puts the node back on the stock scheduler); SIGKILL if it hangs.
    Its exit status, or None when it had to be killed (`timeout_s` is a quiet lab guest's, paced).
    A scx_layered started directly stops the same way on `sig=SIGINT` (it detaches and exits)."""
    agent.send_signal(sig)
    try:
        return agent.wait(paced(timeout_s))
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
        return None


def enforcing() -> bool:
    """The kernel runs a layered scheduler (ours, in the lab)."""
    return read_sched_ext(Path("/")).is_ours()


def keep_logs(work: Path, out: Path) -> None:
    """Copy the job's logs (work/*.log: the agent's, scx_layered's) beside its --out file, into
    the share the host keeps with the run, so a failed run still has its evidence."""
    logs = out.parent / "logs"
    logs.mkdir(exist_ok=True)
    for log in work.glob("*.log"):
        shutil.copyfile(log, logs / log.name)
