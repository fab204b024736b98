"""Reliability rows a VM can produce beyond the proof's (docs/reliability.md).

- A4, A14, A15 with temper-agent enforcing: `python -m temper_testing.lab.faults` (see its
  docstring).
- A13: a guest booted with `isolcpus=1`: the agent refuses enforcement, says why, and never
  loads scx_layered, while a pod asks for a tier.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from temper_testing.lab.provision import LabKernel
from temper_testing.lab.vm import run_in_guest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(1800)
AGENT_START_S = 600  # a bound, not a wait: the script moves on at the first transition


def test_a4_a14_a15_rt_hog_churn_and_clock_jump(
    lab_kernel: LabKernel, scx_layered: Path, tmp_path: Path
) -> None:
    script = (
        f"cd {REPO} && {sys.executable} -m temper_testing.lab.faults "
        f"--scx-layered {scx_layered} --out {tmp_path}/faults.json"
    )
    shares = [(REPO, False), (tmp_path, True)]
    result = run_in_guest(
        lab_kernel, script, shares=shares, timeout_s=1500, cpus=2, cores=2, threads=1
    )
    print(result.output)
    report = json.loads((tmp_path / "faults.json").read_text())
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed == [], json.dumps(report, indent=1)
    names = {c["name"].split()[0] for c in report["checks"]}
    assert {"enforcing", "A15", "A14", "A4"} <= names
    assert result.returncode == 0


def test_a13_isolcpus_refuses_and_never_loads(
    lab_kernel: LabKernel, scx_layered: Path, tmp_path: Path
) -> None:
    pods = tmp_path / "pods"
    pods.mkdir()
    pod = {
        "kind": "Pod",
        "metadata": {"name": "checkout", "namespace": "shop", "uid": "a13-0000"},
        "spec": {"priorityClassName": "temper-critical", "containers": [{"name": "app"}]},
        "status": {"phase": "Running"},
    }
    (pods / "checkout.json").write_text(json.dumps(pod))
    agent = (
        f"{sys.executable} -m temper.agent.main --pods-dir {pods} --state-dir /run/a13 "
        f"--scx-layered {scx_layered}"
    )
    # Wait for the agent's first transition rather than a fixed time: on a busy host the
    # guest's Python start alone can take longer than any guess. Then give it a few more
    # reconcile rounds in which it must still not attach.
    log = tmp_path / "agent.log"
    script = (
        f"cd {REPO} && ({agent} 2> {log} & echo $! > /run/agent.pid)\n"
        f"for _ in $(seq {AGENT_START_S}); do grep -q transition {log} && break; sleep 1; done\n"
        "sleep 5\n"
        "kill -TERM $(cat /run/agent.pid); sleep 3\n"
        "cat /sys/kernel/sched_ext/enable_seq /sys/kernel/sched_ext/state /proc/cmdline\n"
    )
    shares = [(REPO, False), (tmp_path, True)]
    result = run_in_guest(
        lab_kernel,
        script,
        shares=shares,
        timeout_s=AGENT_START_S + 300,
        kernel_args=["isolcpus=1"],
        cpus=2,
        cores=2,
        threads=1,
    )
    print(result.output)
    assert result.returncode == 0
    enable_seq, state, cmdline = result.output.strip().splitlines()[-3:]
    assert "isolcpus=1" in cmdline
    assert (enable_seq, state) == ("0", "disabled")  # nothing ever attached
    lines = log.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    transitions = [e for e in events if e.get("event") == "transition"]
    assert transitions
    assert transitions[0]["mode"] == "refused"
    assert "isolcpus" in str(transitions[0]["reason"])
    assert all(t["action"] is None for t in transitions)
