"""What always-on observation costs: the agent's own CPU time on a node of 1,000 threads.

    python -m temper_testing.lab.overhead --out FILE --work DIR --scx-layered PATH
        [--host-root DIR] [--cgroup-root DIR] [--duration-s 300] [--warmup-s 30] [--repeats 1]

Runs on the host (no sched_ext: the agent refuses and observes) or in the lab guest (the agent
enforces), driven by `bench/observe_overhead.py`. It starts 50 pods of 20 threads each (a
container process with 18 named threads and its main thread, plus the sandbox's pause), in
all five tiers: 5 critical pods (100 threads to read every second), 45 others (900 threads,
each read at least every 30 s). Their threads wake once a second, as idle service threads do.

Then, per repeat, the agent runs once with observation on and once with it off (the baseline,
same pods, same process), each for `--duration-s` after `--warmup-s`, while this program
scrapes `/metrics` every 15 s. The agent's CPU time is read from `/proc/<pid>/stat` (utime +
stime of all its threads) at the start and end of the window; the sampler's counters from
`/observe` give the reads per second actually made. A separate in-process measurement gives
the cost of one thread read, with kept-open descriptors and with open/read/close.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from temper.host.threads import ThreadReader
from temper.policy.pods import parse_pod
from temper_testing.lab.agentrun import AGENT_LOG, agent_argv, stop_agent
from temper_testing.lab.node import Container, SimulatedNode, Thread
from temper_testing.lab.observe import free_port, get_json, wait_for
from temper_testing.lab.pace import paced

TIERS = (  # (PriorityClass, pods)
    ("temper-critical", 5),
    ("temper-high", 10),
    ("temper-normal", 15),
    ("temper-low", 10),
    ("temper-background", 10),
)
NAMED_THREADS = 18  # + the container's main thread + the sandbox's pause = 20 per pod
SCRAPE_INTERVAL_S = 15.0
# Idle service threads wake on timers; once a second each keeps 1,000 threads light enough for
# the TCG guest (at the lab's usual 50 ms, 20,000 wakeups a second saturated its 2 vCPUs and
# new pods' processes could not start within 30 s).
WAKE_S = 1.0
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m temper_testing.lab.overhead")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--scx-layered", type=Path, required=True)
    parser.add_argument("--host-root", type=Path, default=Path("/"))
    parser.add_argument("--cgroup-root", type=Path, default=Path("/sys/fs/cgroup"))
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    report = run(args)
    args.out.write_text(json.dumps(report, indent=1))
    return 0


def pod_manifests() -> list[dict[str, Any]]:
    manifests = []
    for priority_class, count in TIERS:
        for index in range(count):
            name = f"{priority_class.removeprefix('temper-')}-{index:02d}"
            resources = {"requests": {"cpu": "20m", "memory": "32Mi"}}
            meta = {
                "name": name,
                "namespace": "bench",
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.bench.temper-lab")),
            }
            spec = {
                "priorityClassName": priority_class,
                "containers": [{"name": "app", "resources": resources}],
            }
            status = {"phase": "Running"}
            manifests.append({"kind": "Pod", "metadata": meta, "spec": spec, "status": status})
    return manifests


def run(args: argparse.Namespace) -> dict[str, Any]:
    work: Path = args.work
    (work / "pods").mkdir(parents=True, exist_ok=True)
    threads = tuple(Thread(f"w-{i:02d}") for i in range(NAMED_THREADS))
    runs: list[dict[str, Any]] = []
    with SimulatedNode(args.cgroup_root, require_cpu=False) as node:
        for manifest in pod_manifests():
            pod = parse_pod(manifest, manifest["metadata"]["name"])
            node.add_pod(pod, [Container("app", 20, None, threads, wake_s=WAKE_S)])
            (work / "pods" / f"{pod.name}.json").write_text(json.dumps(manifest))
        tids = [t for p in node.pods.values() for pid in p.pids() for t in _tasks(pid)]
        read_cost = measure_read_cost(tids)
        for repeat in range(args.repeats):
            for observe in ("on", "off"):
                print(f"overhead: repeat {repeat + 1}, observation {observe}", flush=True)
                runs.append(measure(args, observe))
    on = [r["cpu_pct_of_one_core"] for r in runs if r["observe"] == "on"]
    off = [r["cpu_pct_of_one_core"] for r in runs if r["observe"] == "off"]
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "pods": sum(count for _, count in TIERS),
        "threads": len(tids),
        "critical_threads": runs[0]["critical_threads"],
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "scrape_interval_s": SCRAPE_INTERVAL_S,
        "read_cost_us": read_cost,
        "runs": runs,
        "cpu_pct_of_one_core": round(statistics.mean(on), 4),
        "baseline_cpu_pct_of_one_core": round(statistics.mean(off), 4),
        "observation_cpu_pct_of_one_core": round(statistics.mean(on) - statistics.mean(off), 4),
    }


def measure(args: argparse.Namespace, observe: str) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [
        *agent_argv(args.work, args.scx_layered),
        *("--host-root", str(args.host_root), "--listen", f"127.0.0.1:{port}"),
        *("--observe", observe),
    ]
    with (args.work / AGENT_LOG).open("ab") as log:
        agent = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: {"ok": True} if _ready(base) else None, paced(240))
        time.sleep(args.warmup_s)
        before = _observe(base, observe)
        cpu_before, wall_before = cpu_seconds(agent.pid), time.monotonic()
        scrapes = scrape_for(base, args.duration_s)
        cpu_after, wall_after = cpu_seconds(agent.pid), time.monotonic()
        after = _observe(base, observe)
        scheduler = _children_cpu(agent.pid)
    finally:
        stop_agent(agent)
    wall = wall_after - wall_before
    cpu = cpu_after - cpu_before
    samples = after["sampler"]["samples"] - before["sampler"]["samples"]
    deferred = after["sampler"]["skipped"] - before["sampler"]["skipped"]
    return {
        "observe": observe,
        "mode": after["mode"]["mode"],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 3),
        "cpu_pct_of_one_core": round(100 * cpu / wall, 4),
        "samples_per_s": round(samples / wall, 1),
        "deferred_per_s": round(deferred / wall, 2),
        "critical_threads": sum(t["threads"] for t in after["tiers"] if t["tier"] == "critical"),
        "threads_seen": sum(t["threads"] for t in after["tiers"]),
        "scrapes": scrapes,
        "scheduler_cpu_s_total": scheduler,
    }


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _observe(base: str, observe: str) -> dict[str, Any]:
    if observe == "off":  # no snapshot without observation; the counters stay at zero
        empty = {"samples": 0, "skipped": 0}
        return {"sampler": empty, "mode": {"mode": "unobserved"}, "tiers": []}
    return wait_for(lambda: get_json(f"{base}/observe"), paced(60))


def scrape_for(base: str, duration_s: float) -> int:
    """GET /metrics every SCRAPE_INTERVAL_S for `duration_s`; the number of scrapes."""
    done = threading.Event()
    count = 0

    def scrape() -> None:
        nonlocal count
        while not done.wait(SCRAPE_INTERVAL_S):
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:
                answer.read()
            count += 1

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    time.sleep(duration_s)
    done.set()
    scraper.join(15)
    return count


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, in seconds (/proc/<pid>/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def _children_cpu(pid: int) -> float | None:
    """The agent's children's CPU seconds so far (scx_layered when enforcing); None if none."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return round(sum(cpu_seconds(int(c)) for c in children), 3) if children else None


def _tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def measure_read_cost(tids: list[int], rounds: int = 20) -> dict[str, float]:
    """CPU microseconds per thread read: kept-open descriptors, and open/read/close."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # two files a thread, as the agent
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * len(tids))), hard))
    costs = {}
    for name, max_open in (("kept_open", len(tids)), ("open_read_close", 0)):
        reader = ThreadReader(Path("/"), max_open=max_open)
        for tid in tids:
            reader.read(tid)
        started = time.process_time()
        for _ in range(rounds):
            for tid in tids:
                reader.read(tid)
        costs[name] = round((time.process_time() - started) / (rounds * len(tids)) * 1e6, 2)
        reader.close()
    return costs


if __name__ == "__main__":
    sys.exit(main())
