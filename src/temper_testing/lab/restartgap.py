"""Restart gap, run as root inside the lab guest: `python -m temper_testing.lab.restartgap`.

    python -m temper_testing.lab.restartgap --scx-layered PATH --out FILE
                                            [--restarts N] [--baseline N]

How long does the node sit on the stock scheduler when a config change makes `temper-agent`
replace scx_layered? The agent enforces a simulated node with a critical pod, whose thread
`canary` wakes every 50 ms, and a `flip` pod whose PriorityClass alternates between
temper-high and none (normal): each flip moves a pod to another tier, so the running config
would misplace it and the agent replaces the scheduler (REPLACE: the new instance loads while
the old one runs, and attaches the moment the old one has left; ADR 0003).

A sampler polls every millisecond `/sys/kernel/sched_ext/state` and the canary's
`ext.enabled` in `/proc/<tid>/sched`; a gap is a run of samples with the state not `enabled`
(resp. the canary not on sched_ext), from its first such sample to the first sample after it.
`--restarts` flips run on the idle node, then as many with CPU-bound spinners in a background
pod (2 per vCPU: the saturated node). Before the agent starts, `--baseline` plain stop-and-start
restarts of scx_layered (SIGTERM, then a new process) show what the replacement saves.

Writes JSON to `--out`: per condition the gaps in ms and their p50/p99/max.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temper.host.machine import read_machine_shape
from temper.host.sched_ext import read_sched_ext
from temper.policy.machine import MachineShape
from temper.policy.planner import plan_node
from temper.policy.scx import SCHEDULER_FLAGS
from temper.policy.tiers import QosClass
from temper_testing.lab.agentrun import (
    AGENT_LOG,
    LAB_START_TIMEOUT_S,
    enforcing,
    keep_logs,
    start_agent,
    stop_agent,
)
from temper_testing.lab.measure import percentile
from temper_testing.lab.node import SimulatedNode
from temper_testing.lab.pace import paced
from temper_testing.lab.processes import spawn_in
from temper_testing.lab.proof import LabPod, lab_pod, wait

ROOT = Path("/")
WORK = Path("/run/temper-lab-restartgap")
STATE = ROOT / "sys/kernel/sched_ext/state"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SAMPLE_S = 0.001
SETTLE_S = 1.0  # after a replacement, before the next flip


@dataclass
class Sampler:
    """Polls the kernel state and the canary every millisecond on its own thread."""

    canary_tid: int
    state_gaps: list[tuple[float, float]] = field(default_factory=list)
    canary_gaps: list[tuple[float, float]] = field(default_factory=list)
    # (time, state) at every change of the kernel state: where a gap's time goes.
    changes: list[tuple[float, str]] = field(default_factory=list)
    samples: int = 0
    longest_interval_ms: float = 0.0  # the sampler's worst blind spot
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        sched = Path(f"/proc/{self.canary_tid}/sched")
        state_since: float | None = None
        canary_since: float | None = None
        last = ""
        previous = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            self.longest_interval_ms = max(self.longest_interval_ms, (now - previous) * 1000)
            previous = now
            state = STATE.read_text().strip()
            on_ext = _ext_enabled(sched)
            if state != last:
                self.changes.append((now, state))
                last = state
            state_since = _track(self.state_gaps, state_since, state != "enabled", now)
            canary_since = _track(self.canary_gaps, canary_since, not on_ext, now)
            self.samples += 1
            time.sleep(SAMPLE_S)

    def phases_since(self, start: float) -> dict[str, float]:
        """Milliseconds spent in each non-enabled state since `start`."""
        spent: dict[str, float] = {}
        changes = [c for c in self.changes if c[0] >= start]
        for (t, state), (t_next, _) in itertools.pairwise(changes):
            if state != "enabled":
                spent[state] = round(spent.get(state, 0.0) + (t_next - t) * 1000, 2)
        return spent

    def stop(self) -> None:
        self._stop.set()

    def gaps_since(self, start: float) -> tuple[list[float], list[float]]:
        """Gaps (ms) that began after `start`: the kernel state's and the canary's."""
        return (
            [round((b - a) * 1000, 2) for a, b in self.state_gaps if a >= start],
            [round((b - a) * 1000, 2) for a, b in self.canary_gaps if a >= start],
        )


def _track(
    gaps: list[tuple[float, float]], since: float | None, out: bool, now: float
) -> float | None:
    if out and since is None:
        return now
    if not out and since is not None:
        gaps.append((since, now))
        return None
    return since


def _ext_enabled(sched: Path) -> bool:
    for line in sched.read_text().splitlines():
        if line.startswith("ext.enabled"):
            return line.split(":")[1].strip() == "1"
    return False


def figures(gaps: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(gaps)
    worst = ordered[-1] if ordered else None
    p50, p99 = (percentile(ordered, 50), percentile(ordered, 99)) if ordered else (None, None)
    return {"n": len(ordered), "p50": p50, "p99": p99, "max": worst, "gaps_ms": list(gaps)}


def flip_pod(high: bool) -> LabPod:
    return lab_pod("flip", QosClass.BURSTABLE, 250, "temper-high" if high else None, ("flip-w",))


PODS = (lab_pod("lc", QosClass.GUARANTEED, 1000, "temper-critical", ("canary",)), flip_pod(True))


def _tid(pid: int, comm: str) -> int:
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == comm:
            return int(task.name)
    raise RuntimeError(f"no thread {comm!r} in process {pid}")


def _write_result(result: dict[str, Any], sampler: Sampler, out: Path) -> None:
    """The figures so far, the sampler's own quality, the agent's log tail; the logs kept."""
    result["samples"] = sampler.samples
    result["longest_sample_interval_ms"] = round(sampler.longest_interval_ms, 1)
    log = WORK / AGENT_LOG
    result["agent_log_tail"] = log.read_text(errors="replace")[-8000:] if log.exists() else ""
    out.write_text(json.dumps(result, indent=2))
    keep_logs(WORK, out)
    _log(f"wrote {out}")


def _log(text: str) -> None:
    print(f"restartgap: {text}", flush=True)


def _enable_seq() -> int | None:
    return read_sched_ext(ROOT).enable_seq


def _replaced(seq: int | None) -> bool:
    """Our scheduler runs again, as another instance than the one with `seq`."""
    status = read_sched_ext(ROOT)
    return status.is_ours() and status.enable_seq != seq


def baseline(scx: Path, shape: MachineShape, runs: int, sampler: Sampler) -> list[float]:
    """Stop-and-start restarts of scx_layered itself: the gap the replacement avoids."""
    config = WORK / "baseline.json"
    config.write_text(plan_node([p.pod for p in PODS], shape).config_json())
    argv = [str(scx), *SCHEDULER_FLAGS, f"f:{config}"]
    gaps: list[float] = []
    current = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        if not wait(enforcing, paced(LAB_START_TIMEOUT_S)):
            raise RuntimeError("scx_layered did not attach for the baseline")
        for run in range(runs):
            time.sleep(SETTLE_S)
            start = time.monotonic()
            current.send_signal(signal.SIGTERM)
            current.wait(30)
            current = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if not wait(enforcing, paced(LAB_START_TIMEOUT_S)):
                raise RuntimeError("scx_layered did not re-attach for the baseline")
            time.sleep(0.05)
            state, _ = sampler.gaps_since(start)
            gaps.append(max(state, default=0.0))
            _log(f"baseline {run + 1}/{runs}: {gaps[-1]:.1f} ms on the stock scheduler")
    finally:
        current.send_signal(signal.SIGTERM)
        current.wait(30)
    return gaps


def _flip_tier() -> None:
    """Move the `flip` pod to the other tier than the one its manifest has now. Derived from the
    file, not from a run counter: a phase that started its own count at 0 after an odd number of
    flips wrote the tier already set, no replacement was due, and the harness waited it out."""
    path = WORK / "pods" / "flip.json"
    high = json.loads(path.read_text())["spec"].get("priorityClassName") == "temper-high"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(flip_pod(high=not high).manifest))
    partial.replace(path)


def replacements(
    runs: int, sampler: Sampler, agent_alive: Callable[[], bool], into: dict[str, Any]
) -> None:
    """Flip the `flip` pod's tier `runs` times; each flip is one replacement by the agent.
    `into` holds the figures so far after every replacement, so a failure keeps them."""
    state_gaps: list[float] = []
    canary_gaps: list[float] = []
    phases: list[dict[str, float]] = []
    for run in range(runs):
        seq = _enable_seq()
        start = time.monotonic()
        _flip_tier()
        replaced = wait(functools.partial(_replaced, seq), paced(LAB_START_TIMEOUT_S))
        if not replaced or not agent_alive():
            raise RuntimeError(f"restart {run + 1}: the agent did not replace scx_layered")
        time.sleep(SETTLE_S)
        state, canary = sampler.gaps_since(start)
        state_gaps.append(max(state, default=0.0))
        canary_gaps.append(max(canary, default=0.0))
        phases.append(sampler.phases_since(start))
        into.update(state=figures(state_gaps), canary=figures(canary_gaps), phases_ms=phases)
        _log(
            f"{run + 1}/{runs}: state {state_gaps[-1]:.1f} ms {phases[-1]}, "
            f"canary {canary_gaps[-1]:.1f} ms off sched_ext"
        )


def saturate(node_cpus: int, container: Path) -> list[subprocess.Popen[bytes]]:
    return [spawn_in(container) for _ in range(2 * node_cpus)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temper_testing.lab.restartgap")
    parser.add_argument("--scx-layered", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--baseline", type=int, default=3)
    args = parser.parse_args(argv)
    shape = read_machine_shape(ROOT)
    (WORK / "pods").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"restarts": args.restarts, "sample_interval_ms": SAMPLE_S * 1000}
    batch = lab_pod("etl", QosClass.BURSTABLE, 250, "temper-background", ("etl-w",))
    spinners: list[subprocess.Popen[bytes]] = []
    with SimulatedNode() as node:
        running = {p.pod.name: node.add_pod(p.pod, p.containers) for p in (*PODS, batch)}
        for pod in (*PODS, batch):
            (WORK / "pods" / f"{pod.pod.name}.json").write_text(json.dumps(pod.manifest))
        sampler = Sampler(_tid(running["lc"].containers["app"][0], "canary"))
        thread = threading.Thread(target=sampler.run, name="sampler", daemon=True)
        thread.start()
        try:
            if args.baseline:
                _log(f"baseline: {args.baseline} stop-and-start restarts of scx_layered")
                result["stop_start"] = figures(
                    baseline(args.scx_layered, shape, args.baseline, sampler)
                )
            agent = start_agent(WORK, args.scx_layered)
            try:
                if not wait(enforcing, paced(LAB_START_TIMEOUT_S)):
                    raise RuntimeError("the agent never enforced")
                alive = lambda: agent.poll() is None  # noqa: E731
                _log("idle node")
                replacements(args.restarts, sampler, alive, result.setdefault("idle", {}))
                etl = CGROUP_ROOT / running["etl"].container_paths["app"].strip("/")
                spinners = saturate(shape.nr_cpus, etl)
                _log("saturated node")
                replacements(args.restarts, sampler, alive, result.setdefault("saturated", {}))
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
                stop_agent(agent)
        except Exception as exc:  # keep what was measured, and why it stopped
            result["error"] = f"{type(exc).__name__}: {exc}"
            _log(f"stopped early: {result['error']}")
        finally:
            sampler.stop()
            thread.join()
            _write_result(result, sampler, args.out)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
