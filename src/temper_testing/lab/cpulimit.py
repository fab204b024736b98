"""CPU limits under stock and under Temper, run as root inside the lab guest.

    python -m temper_testing.lab.cpulimit --scx-layered PATH --out FILE
                                          [--repeats N] [--duration-s S]

kubelet turns a container's CPU limit into `cpu.max` (CFS bandwidth control). scx_layered does not
implement bandwidth control, so on a node it enforces a limit is not a ceiling any more
(docs/scx-layered.md#cpu-limits-are-not-enforced). This measures by how much: a Burstable pod
`capped` (request 250m, limit 500m, tier normal by its QoS class) runs 2 CPU-bound processes per
vCPU, beside an idle critical pod (so the agent has a tier to enforce). Phases alternate, `stock`
(no scheduler loaded) and `temper` (temper-agent enforcing), `--repeats` times each; per phase it
reads the pod cgroup's `cpu.stat` before and after: CPUs used (usage_usec over wall time), and how
often and how long CFS throttled it.

Writes JSON to `--out`: per phase and pooled per scenario.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temper.host.machine import read_machine_shape
from temper.host.sched_ext import read_sched_ext
from temper.policy.pods import parse_pod
from temper.policy.tiers import QosClass
from temper_testing.lab.agentrun import LAB_START_TIMEOUT_S, enforcing, start_agent, stop_agent
from temper_testing.lab.node import Container, SimulatedNode, Thread
from temper_testing.lab.pace import paced
from temper_testing.lab.processes import spawn_in
from temper_testing.lab.proof import LabPod, lab_pod, wait

ROOT = Path("/")
WORK = Path("/run/temper-lab-cpulimit")
CGROUP_ROOT = Path("/sys/fs/cgroup")
REQUEST_MILLIS, LIMIT_MILLIS = 250, 500
WARMUP_S = 2.0


def capped_pod() -> LabPod:
    """A Burstable pod with a CPU limit above its request: kubelet writes its cpu.max."""
    resources = {
        "requests": {"cpu": f"{REQUEST_MILLIS}m", "memory": "64Mi"},
        "limits": {"cpu": f"{LIMIT_MILLIS}m", "memory": "64Mi"},
    }
    uid = str(uuid.uuid5(uuid.NAMESPACE_DNS, "capped.shop.temper-lab"))
    manifest: dict[str, Any] = {
        "kind": "Pod",
        "metadata": {"name": "capped", "namespace": "shop", "uid": uid},
        "spec": {"containers": [{"name": "app", "resources": resources}]},
        "status": {"phase": "Running"},
    }
    container = Container("app", REQUEST_MILLIS, LIMIT_MILLIS, (Thread("capped-w"),))
    return LabPod(parse_pod(manifest, "capped"), (container,), manifest)


def cpu_stat(cgroup: Path) -> dict[str, int]:
    pairs = (line.split() for line in (cgroup / "cpu.stat").read_text().splitlines())
    return {key: int(value) for key, value in pairs}


def measure(cgroup: Path, seconds: float) -> dict[str, float]:
    time.sleep(WARMUP_S)
    before, t0 = cpu_stat(cgroup), time.monotonic()
    time.sleep(seconds)
    after, t1 = cpu_stat(cgroup), time.monotonic()
    wall_us = (t1 - t0) * 1e6
    return {
        "cpus_used": round((after["usage_usec"] - before["usage_usec"]) / wall_us, 3),
        "throttled_periods": after.get("nr_throttled", 0) - before.get("nr_throttled", 0),
        "throttled_ms": round(
            (after.get("throttled_usec", 0) - before.get("throttled_usec", 0)) / 1000, 1
        ),
        "wall_s": round((t1 - t0), 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temper_testing.lab.cpulimit")
    parser.add_argument("--scx-layered", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=20.0)
    args = parser.parse_args(argv)
    shape = read_machine_shape(ROOT)
    pods = (lab_pod("lc", QosClass.GUARANTEED, 1000, "temper-critical", ("srv",)), capped_pod())
    (WORK / "pods").mkdir(parents=True, exist_ok=True)
    for pod in pods:
        (WORK / "pods" / f"{pod.pod.name}.json").write_text(json.dumps(pod.manifest))
    runs: list[dict[str, Any]] = []
    spinners: list[subprocess.Popen[bytes]] = []
    with SimulatedNode() as node:
        running = {p.pod.name: node.add_pod(p.pod, p.containers) for p in pods}
        capped = running["capped"]
        cgroup = CGROUP_ROOT / capped.path.strip("/")
        container = CGROUP_ROOT / capped.container_paths["app"].strip("/")
        cpu_max = (cgroup / "cpu.max").read_text().strip()
        try:
            spinners += [spawn_in(container) for _ in range(2 * shape.nr_cpus)]
            for repeat in range(args.repeats):
                runs.append(
                    {"repeat": repeat, "scenario": "stock", **measure(cgroup, args.duration_s)}
                )
                print(f"cpulimit: {runs[-1]}", flush=True)
                runs.append({"repeat": repeat, "scenario": "temper", **temper_phase(args, cgroup)})
                print(f"cpulimit: {runs[-1]}", flush=True)
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    pooled = {
        name: round(sum(r["cpus_used"] for r in runs if r["scenario"] == name) / args.repeats, 3)
        for name in ("stock", "temper")
    }
    result = {
        "pod": {
            "request_millis": REQUEST_MILLIS,
            "limit_millis": LIMIT_MILLIS,
            "cpu_max": cpu_max,
        },
        "spinning_processes": len(spinners),
        "node_cpus": shape.nr_cpus,
        "mean_cpus_used": pooled,
        "ratio_to_limit": {k: round(v * 1000 / LIMIT_MILLIS, 2) for k, v in pooled.items()},
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=2))
    return 0


def temper_phase(args: argparse.Namespace, cgroup: Path) -> dict[str, Any]:
    agent = start_agent(WORK, args.scx_layered)
    try:
        started = time.monotonic()
        if not wait(enforcing, paced(LAB_START_TIMEOUT_S)):
            raise RuntimeError("the agent never enforced")
        attach_s = round(time.monotonic() - started, 1)
        seq = read_sched_ext(ROOT).enable_seq
        figures = measure(cgroup, args.duration_s)
        held = read_sched_ext(ROOT).is_ours() and read_sched_ext(ROOT).enable_seq == seq
        return {**figures, "attach_s": attach_s, "enforced_whole_phase": held}
    finally:
        stop_agent(agent)


if __name__ == "__main__":
    raise SystemExit(main())
