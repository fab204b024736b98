"""Faults a VM can produce beyond the proof's, run as root inside the lab guest.

    python -m temper_testing.lab.faults --scx-layered PATH --out FILE

With temper-agent enforcing a simulated node (a critical pod, and low and background pods
running 2 CPU-bound processes per vCPU), rows of docs/reliability.md:

- A15, a large wall-clock jump: CLOCK_REALTIME moved an hour ahead and back. The agent and
  scx_layered time themselves on monotonic clocks: the same scheduler instance (`enable_seq`)
  must stay attached and the agent log no transition.
- A14, affinity and cgroup churn under load for 45 s: two processes switch their CPU affinity
  every 10 ms and move between the low and background pods' cgroups every 100 ms, beside a
  CPU-bound process on the host (a runaway daemon: the host layer is served before batch on the
  shared CPUs, so batch runs only on the anti-stall's turns). The same instance must stay
  attached throughout (polled every 0.5 s): no task waits past the sched_ext watchdog.
- A4, an RT task monopolising a CPU: a SCHED_FIFO spinner pinned to the last CPU for 60 s,
  beside a background-pod process pinned there too. Either the scheduler holds, or it falls
  back with the reason `stall`; either way the agent starts scx_layered at most its failure
  budget (3) times in the window (no restart storm) and is enforcing, or parked with its
  reason, 240 s after the hog ends.

Writes a JSON report to `--out` and exits 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temper.host.machine import read_machine_shape
from temper.host.sched_ext import read_sched_ext
from temper.policy.tiers import QosClass
from temper_testing.lab.agentrun import (
    AGENT_LOG,
    LAB_START_TIMEOUT_S,
    enforcing,
    start_agent,
    stop_agent,
)
from temper_testing.lab.node import RunningPod, SimulatedNode
from temper_testing.lab.pace import paced
from temper_testing.lab.processes import SPIN, spawn_in
from temper_testing.lab.proof import lab_pod, wait

ROOT = Path("/")
WORK = Path("/run/temper-lab-faults")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PODS = (
    lab_pod("lc", QosClass.GUARANTEED, 1000, "temper-critical", ("srv",)),
    lab_pod("trainer", QosClass.BURSTABLE, 500, "temper-low", ("trainer-w",)),
    lab_pod("etl", QosClass.BURSTABLE, 250, "temper-background", ("etl-w",)),
)
BATCH_PODS = ("trainer", "etl")
# A churner: argv[1:] are two cgroup directories; it spins while it moves between them and
# changes its own CPU affinity, until killed.
CHURN = """
import os, sys, time
cpus = sorted(os.sched_getaffinity(0))
masks = [{c} for c in cpus] + [set(cpus)]
dirs = sys.argv[1:]
i = 0
while True:
    os.sched_setaffinity(0, masks[i % len(masks)])
    if i % 10 == 0:
        with open(os.path.join(dirs[(i // 10) % 2], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    end = time.monotonic() + 0.01
    while time.monotonic() < end:
        pass
    i += 1
"""


class Faults:
    def __init__(self, scx_layered: Path) -> None:
        self.scx_layered = scx_layered
        self.checks: list[dict[str, Any]] = []
        self.log = WORK / AGENT_LOG

    def check(self, name: str, ok: bool, detail: object) -> None:
        self.checks.append({"name": name, "ok": ok, "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    def transitions(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if e.get("event") == "transition"]

    def run(self) -> None:
        (WORK / "pods").mkdir(parents=True, exist_ok=True)
        for pod in PODS:
            (WORK / "pods" / f"{pod.pod.name}.json").write_text(json.dumps(pod.manifest))
        background: list[subprocess.Popen[bytes]] = []
        with SimulatedNode() as node:
            running = {p.pod.name: node.add_pod(p.pod, p.containers) for p in PODS}
            agent = start_agent(WORK, self.scx_layered)
            try:
                ok = wait(enforcing, paced(LAB_START_TIMEOUT_S))
                self.check("enforcing", ok, read_sched_ext(ROOT).enable_seq)
                if not ok:
                    return
                for name in BATCH_PODS:
                    for _ in range(os.cpu_count() or 1):
                        background.append(spawn_in(_container(running[name])))
                self.clock_jump()
                self.churn(running)
                self.rt_hog(running)
            finally:
                for process in background:
                    process.kill()
                    process.wait()
                stop_agent(agent)

    def clock_jump(self) -> None:
        seq, marks = read_sched_ext(ROOT).enable_seq, len(self.transitions())
        subprocess.run(["date", "-s", "+1 hour"], check=True, capture_output=True)
        time.sleep(5)
        subprocess.run(["date", "-s", "-1 hour"], check=True, capture_output=True)
        time.sleep(5)
        status = read_sched_ext(ROOT)
        quiet = len(self.transitions()) == marks
        self.check(
            "A15 wall-clock jump",
            status.is_ours() and status.enable_seq == seq and quiet,
            {"enable_seq": [seq, status.enable_seq], "new_transitions": not quiet},
        )

    def churn(self, running: dict[str, RunningPod]) -> None:
        dirs = [str(_container(running[n])) for n in BATCH_PODS]
        churners = [subprocess.Popen([sys.executable, "-c", CHURN, *dirs]) for _ in range(2)]
        churners.append(subprocess.Popen(SPIN))  # the host hog: it stays in the root cgroup
        seq = read_sched_ext(ROOT).enable_seq
        held = True
        try:
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and held:
                status = read_sched_ext(ROOT)
                held = status.is_ours() and status.enable_seq == seq
                time.sleep(0.5)
            alive = all(c.poll() is None for c in churners)
        finally:
            for churner in churners:
                churner.kill()
                churner.wait()
        self.check(
            "A14 affinity and cgroup churn under load",
            held and alive,
            {"held_45s": held, "churners_alive": alive, "enable_seq": seq},
        )

    def rt_hog(self, running: dict[str, RunningPod]) -> None:
        last = str((os.cpu_count() or 1) - 1)
        pinned = spawn_in(_container(running["etl"]), ["taskset", "-c", last, *SPIN])
        marks = len(self.transitions())
        seq = read_sched_ext(ROOT).enable_seq
        hog = subprocess.Popen(["chrt", "-f", "40", "taskset", "-c", last, *SPIN])
        try:
            time.sleep(60)
        finally:
            hog.kill()
            hog.wait()
            pinned.kill()
            pinned.wait()
        window = self.transitions()[marks:]
        starts = sum(1 for t in window if t.get("action") == "start")
        reasons = sorted({str(t["reason"]) for t in window})
        held = read_sched_ext(ROOT).enable_seq == seq and read_sched_ext(ROOT).is_ours()
        stalled = any("exited (stall)" in r for r in reasons)
        settled = wait(lambda: enforcing() or _parked(self.log), paced(240))
        self.check(
            "A4 RT task monopolising a CPU",
            (held or stalled) and starts <= 3 and settled,
            {"held": held, "starts": starts, "reasons": reasons, "settled": settled},
        )


def _container(pod: RunningPod) -> Path:
    return CGROUP_ROOT / pod.container_paths["app"].strip("/")


def _parked(log: Path) -> bool:
    return '"mode": "parked"' in log.read_text()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temper_testing.lab.faults")
    parser.add_argument("--scx-layered", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(f"machine: {read_machine_shape(ROOT).describe()}", flush=True)
    faults = Faults(args.scx_layered)
    try:
        faults.run()
    finally:
        tail = faults.log.read_text().splitlines()[-30:] if faults.log.exists() else []
        args.out.write_text(json.dumps({"checks": faults.checks, "agent_log": tail}, indent=1))
    return 0 if faults.checks and all(c["ok"] for c in faults.checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
