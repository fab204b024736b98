"""The agent watching its node in a busy cluster: memory, CPU, and pod event to new plan.

Starts the test control plane (real etcd and kube-apiserver, `make control-plane`), creates
`--nodes` nodes with `--pods-per-node` pods each (5,000 pods by default, 250 on the measured
node), and runs `temper-agent --node-name` as its own process on a fake host (fake sysfs, the
fake scx_layered child), as in the control-plane tests. It measures, from outside the process:

- RSS (`VmRSS`, and the peak `VmHWM`) from /proc once the agent has planned its pods and sat
  idle, and again after the event phase;
- CPU (utime + stime from /proc/<pid>/stat) over an idle window and over the event phase;
- event to plan: `--events` pods created one at a time on the node (then as many deleted), each
  timed from just before the create (or delete) request to the agent's `planned` log line that
  counts the new number of pods. That covers the API server's write, the watch delivery,
  parsing and planning: what a user waits for.

The baselines, in the same run: the same agent on a node with no pods, same cluster; and the
same agent on the measured node with its gRPC API off (`--api-socket off`), for the API's own
memory and idle CPU.

    python bench/agent_watch.py [--nodes 20] [--pods-per-node 250] [--events 100] [--out DIR]
                                [--render-only]

Writes DIR/agent-watch.json and DIR/agent-watch.md and prints the JSON's path last. The figures
README.md and docs/ quote come from the committed report through `doc_figures` (each in a block
named in `FIGURE_DOCS`); `--render-only` rewrites the markdown and those blocks from an existing
JSON without measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temper.policy.machine import synthetic_shape
from temper_testing.kubetest.agentproc import AgentProcess
from temper_testing.kubetest.controlplane import ControlPlane
from temper_testing.lab.guestjob import write_doc_block

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "bench" / "reports"
RENDER = "python bench/agent_watch.py --render-only"
# The blocks doc_figures() fills, and the docs that hold each (tests/unit/test_doc_figures.py).
FIGURE_DOCS = {
    "agent-watch-figures": ("README.md",),
    "agent-watch-api-cost": ("docs/cli.md",),
    "agent-watch-memory": ("docs/reliability.md",),
}
CLASSES = ("temper-critical", "temper-high", "temper-normal", "temper-low", "temper-background")
TARGET_RSS_MIB = 80.0
TARGET_P99_MS = 100.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def progress(text: str) -> None:
    print(f"agent-watch: {text}", file=sys.stderr, flush=True)


def pod_body(index: int, node: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{node}-pod-{index}", "labels": {"app": f"app-{index % 17}"}},
        "spec": {
            "nodeName": node,
            "priorityClassName": CLASSES[index % len(CLASSES)],
            "containers": [
                {
                    "name": "app",
                    "image": "registry.invalid/app:1",
                    "resources": {"requests": {"cpu": f"{50 + 50 * (index % 8)}m"}},
                },
                {"name": "sidecar", "image": "registry.invalid/sidecar:1"},
            ],
        },
    }


def populate(plane: ControlPlane, nodes: list[str], per_node: int) -> float:
    plane.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "bench"}})
    for cls, value in zip(CLASSES, (1_000_000, 100_000, 10_000, 100, -100), strict=True):
        plane.ok(
            "POST",
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            {"metadata": {"name": cls}, "value": value},
        )
    for node in nodes:
        plane.ok("POST", "/api/v1/nodes", {"metadata": {"name": node}})
    jobs = [(i, node) for node in nodes for i in range(per_node)]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        for done, _ in enumerate(
            pool.map(
                lambda job: plane.ok("POST", "/api/v1/namespaces/bench/pods", pod_body(*job)),
                jobs,
            ),
            1,
        ):
            if done % 1000 == 0:
                progress(f"{done}/{len(jobs)} pods created")
    return time.monotonic() - started


class Agent(AgentProcess):
    """The agent under measurement: its plans from the log, its memory and CPU from /proc."""

    def __init__(
        self, workdir: Path, node: str, kubeconfig: Path, extra_args: tuple[str, ...] = ()
    ) -> None:
        super().__init__(workdir, node, kubeconfig, extra_args, shape=synthetic_shape(1, 8, 2, 1))
        self.start()
        assert self.process is not None
        self.pid = self.process.pid

    def planned(self) -> list[dict[str, Any]]:
        return self.events("planned")

    def wait_planned(self, pods: int, since: float = 0.0, timeout_s: float = 120) -> float:
        """The time (epoch s) of the agent's first plan of `pods` pods logged at or after
        `since` (log times have 1 ms steps), waiting for it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            times = [e["ts"] for e in self.planned() if e["pods"] == pods and e["ts"] >= since]
            if times:
                return float(min(times))
            time.sleep(0.01)
        raise RuntimeError(f"agent never planned {pods} pods; log: {self.log}")

    def memory_kib(self) -> dict[str, int]:
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields

    def cpu_s(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        parts = stat.rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK_TCK


def idle_cpu(agent: Agent, window_s: float) -> float:
    before = agent.cpu_s()
    time.sleep(window_s)
    return round((agent.cpu_s() - before) / window_s * 1000, 2)  # millicpu


def event_latencies(
    plane: ControlPlane, agent: Agent, node: str, base: int, n: int
) -> dict[str, Any]:
    """Create n pods one by one, then delete them; ms from request to the agent's plan."""
    creates, deletes = [], []
    start_cpu = agent.cpu_s()
    started = time.monotonic()
    for i in range(n):
        sent = time.time()
        plane.ok("POST", "/api/v1/namespaces/bench/pods", pod_body(100_000 + i, node))
        planned = agent.wait_planned(base + i + 1, since=sent - 0.001, timeout_s=30)
        creates.append(round(max(0.0, planned - sent) * 1000, 1))
    for i in range(n):
        sent = time.time()
        plane.ok(
            "DELETE",
            f"/api/v1/namespaces/bench/pods/{node}-pod-{100_000 + i}",
            query={"gracePeriodSeconds": "0"},
        )
        planned = agent.wait_planned(base + n - i - 1, since=sent - 0.001, timeout_s=30)
        deletes.append(round(max(0.0, planned - sent) * 1000, 1))
    wall = time.monotonic() - started
    return {
        "create_ms": creates,
        "delete_ms": deletes,
        "cpu_millicpu": round((agent.cpu_s() - start_cpu) / wall * 1000, 1),
        "wall_s": round(wall, 1),
    }


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max": ordered[-1],
    }


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    plane = ControlPlane.start(workdir / "control-plane")
    try:
        nodes = [f"node-{i:02d}" for i in range(args.nodes)]
        progress(f"creating {args.nodes * args.pods_per_node} pods on {args.nodes} nodes")
        populate_s = populate(plane, nodes, args.pods_per_node)
        plane.ok("POST", "/api/v1/nodes", {"metadata": {"name": "empty-node"}})
        runs: dict[str, Any] = {}
        for name, node, pods, extra in (
            ("baseline", "empty-node", 0, ()),
            ("api_off", nodes[0], args.pods_per_node, ("--api-socket", "off")),
            ("agent", nodes[0], args.pods_per_node, ()),
        ):
            progress(f"{name}: agent on {node} ({pods} pods) {' '.join(extra)}")
            (workdir / name).mkdir()
            agent = Agent(workdir / name, node, plane.kubeconfig, extra)
            try:
                started = time.monotonic()
                agent.wait_planned(pods)
                first_plan_s = round(time.monotonic() - started, 2)
                time.sleep(args.settle_s)
                run: dict[str, Any] = {
                    "node": node,
                    "pods": pods,
                    "first_plan_s": first_plan_s,
                    "idle_millicpu": idle_cpu(agent, args.idle_s),
                    "memory_idle_kib": agent.memory_kib(),
                }
                if name == "agent":
                    progress(f"{name}: {args.events} creates and {args.events} deletes")
                    run["events"] = event_latencies(plane, agent, node, pods, args.events)
                    run["memory_after_events_kib"] = agent.memory_kib()
                runs[name] = run
            finally:
                agent.stop()
    finally:
        plane.stop()
    events = runs["agent"]["events"]
    both = events["create_ms"] + events["delete_ms"]
    rss = runs["agent"]["memory_after_events_kib"]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "cluster": {
            "nodes": args.nodes,
            "pods": args.nodes * args.pods_per_node,
            "pods_on_measured_node": args.pods_per_node,
            "populate_s": round(populate_s, 1),
            "kube_apiserver": plane.binaries.apiserver.parent.parent.name,
        },
        "runs": runs,
        "event_to_plan_ms": {
            "create": summary(events["create_ms"]),
            "delete": summary(events["delete_ms"]),
            "all": summary(both),
        },
        "rss_mib": round(rss["VmRSS"] / 1024, 1),
        "peak_rss_mib": round(rss["VmHWM"] / 1024, 1),
        "baseline_rss_mib": round(runs["baseline"]["memory_idle_kib"]["VmRSS"] / 1024, 1),
        "targets": {"rss_mib": TARGET_RSS_MIB, "event_to_plan_p99_ms": TARGET_P99_MS},
    }


def render_markdown(report: dict[str, Any]) -> str:
    cluster, runs = report["cluster"], report["runs"]
    agent, baseline, api_off = runs["agent"], runs["baseline"], runs["api_off"]
    e2p = report["event_to_plan_ms"]
    peak = report["peak_rss_mib"]
    rss_ratio = report["rss_mib"] / report["baseline_rss_mib"]
    lines = [
        "# The agent watching its node in a 5,000-pod cluster",
        "",
        f"Run {report['date']} by `python bench/agent_watch.py`. On the host, not under TCG.",
        "",
        "## Setup",
        "",
        f"- Machine: {report['machine']['arch']}, {report['machine']['cpus']} CPUs, Python "
        f"{report['machine']['python']}, Linux {report['machine']['kernel']}.",
        f"- Control plane on the same machine: etcd and kube-apiserver "
        f"v{cluster['kube_apiserver']} (the control-plane test tier's harness).",
        f"- Cluster: {cluster['nodes']} nodes x {cluster['pods_on_measured_node']} pods = "
        f"{cluster['pods']} pods (created in {cluster['populate_s']} s), each with two "
        "containers and a temper-* PriorityClass; plus an empty node.",
        "- `temper-agent --node-name` as its own process (admin kubeconfig), on a fake host "
        "(16-CPU fake sysfs, the fake scx_layered child), measured from /proc.",
        "- Event to plan: a pod created (then deleted) on the node, one at a time; from just "
        "before the request to the agent's `planned` log line with the new pod count.",
        "- Baselines in the same run: the same agent on the empty node, and on the measured "
        "node with its gRPC API off (`--api-socket off`).",
        "",
        "## Results",
        "",
        "| | pods on node | first plan (s) | RSS idle (MiB) | idle CPU (millicpu) |",
        "|---|---:|---:|---:|---:|",
    ]
    runs_shown = (
        ("baseline (empty node)", baseline),
        ("agent, API off", api_off),
        ("agent", agent),
    )
    for name, run in runs_shown:
        lines.append(
            f"| {name} | {run['pods']} | {run['first_plan_s']} | "
            f"{run['memory_idle_kib']['VmRSS'] / 1024:.1f} | {run['idle_millicpu']} |"
        )
    events = agent["events"]
    lines += [
        "",
        f"After {len(events['create_ms'])} creates and {len(events['delete_ms'])} deletes: "
        f"RSS {report['rss_mib']} MiB, peak {peak} MiB; CPU during the event phase "
        f"{events['cpu_millicpu']} millicpu over {events['wall_s']} s.",
        "",
        "| event to plan (ms) | p50 | p99 | max |",
        "|---|---:|---:|---:|",
    ]
    for name in ("create", "delete", "all"):
        row = e2p[name]
        lines.append(f"| {name} | {row['p50']} | {row['p99']} | {row['max']} |")
    rss_ok = "met" if peak < TARGET_RSS_MIB else "missed"
    p99_ok = "met" if e2p["all"]["p99"] < TARGET_P99_MS else "missed"
    lines += [
        "",
        "## Against the targets and the baseline",
        "",
        f"- RSS under {TARGET_RSS_MIB:g} MiB: peak {peak} MiB, {rss_ok} "
        f"({peak / TARGET_RSS_MIB:.0%} of the budget).",
        f"- Event to plan p99 under {TARGET_P99_MS:g} ms: {e2p['all']['p99']} ms, {p99_ok}.",
        f"- 250 pods cost {report['rss_mib'] - report['baseline_rss_mib']:.1f} MiB over the "
        f"empty-node baseline ({rss_ratio:.2f}x); the rest is the interpreter and the API "
        "client.",
        f"- The gRPC API for temper-cli (grpcio loaded, its server idle) costs "
        f"{_kib_delta_mib(agent, api_off):.1f} MiB of RSS and "
        f"{agent['idle_millicpu'] - api_off['idle_millicpu']:.2f} millicpu idle: the agent "
        "against the same agent with `--api-socket off`, which never loads grpcio, both idle "
        "on the same node.",
        "",
        "## Caveats",
        "",
        "- One 2-core machine runs etcd, kube-apiserver, the agent and this driver: the API "
        "server's own work is in every latency figure, and contention adds to the tail.",
        "- The fake scx_layered child restarts when a new pod's tier needs a new config; its "
        "CPU is not the agent's and is not counted.",
        "- Used CPU per tier is sampled from cgroups that do not exist on the fake host (0).",
        "- CPU in the event phase is the cost of planning every change at once: a py-spy "
        "profile of a run like this one (1,000 pods in the cluster; `py-spy record -f raw`, "
        "200 Hz) put 57% of the "
        "agent's samples in planning, a third in the planner's first-match check of each pod "
        "against the regex rules 250 pods fold into. Batching changes that arrive together "
        "would cut it under churn, at some latency.",
    ]
    return "\n".join(lines) + "\n"


def _kib_delta_mib(run: dict[str, Any], other: dict[str, Any]) -> float:
    return (run["memory_idle_kib"]["VmRSS"] - other["memory_idle_kib"]["VmRSS"]) / 1024


def doc_figures(report: dict[str, Any]) -> dict[str, str]:
    """The figures README.md and docs/ quote, rendered from the report so they cannot drift:
    block name -> its text (`FIGURE_DOCS` says which docs hold it)."""
    cluster, agent, api_off = report["cluster"], report["runs"]["agent"], report["runs"]["api_off"]
    e2p = report["event_to_plan_ms"]["all"]
    node = cluster["pods_on_measured_node"]
    events = len(agent["events"]["create_ms"])
    budget = report["targets"]["rss_mib"]
    texts = {
        "agent-watch-figures": f"Watching {node} pods among {cluster['pods']:,} it peaks at "
        f"{report['peak_rss_mib']} MiB RSS, and a pod event reaches a new plan in {e2p['p50']} ms "
        f"p50 / {e2p['p99']} ms p99 (bench/reports/agent-watch.md).",
        "agent-watch-api-cost": f"What it costs: {_kib_delta_mib(agent, api_off):.1f} MiB of RSS "
        f"and {agent['idle_millicpu'] - api_off['idle_millicpu']:.2f} millicpu of idle CPU "
        "(bench/reports/agent-watch.md, measured as the agent with and without `--api-socket "
        f"off` on the same {node}-pod node).",
        "agent-watch-memory": f"Row B2, measured: the agent's RSS peaked at "
        f"{report['peak_rss_mib']} MiB, {report['peak_rss_mib'] / budget:.0%} of its {budget:g} "
        f"MiB budget, after {events} pod creates and {events} deletes on a {node}-pod node of a "
        f"{cluster['pods']:,}-pod cluster (bench/reports/agent-watch.md).",
    }
    return {name: _wrap(text) for name, text in texts.items()}


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def publish(out: Path, report: dict[str, Any]) -> None:
    """Write the markdown; when the report is the committed one, the blocks the docs quote."""
    (out / "agent-watch.md").write_text(render_markdown(report))
    if out.resolve() != REPORTS:
        return
    try:
        texts = doc_figures(report)
    except (LookupError, ValueError) as exc:  # a run that stopped early: the docs keep theirs
        print(
            f"agent_watch: the docs keep their figures, this report lacks some ({exc!r})",
            file=sys.stderr,
        )
        return
    for block, text in texts.items():
        for doc in FIGURE_DOCS[block]:
            write_doc_block(block, RENDER, text, REPO / doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--pods-per-node", type=int, default=250)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite DIR/agent-watch.md, and the figures the docs quote, from its JSON",
    )
    args = parser.parse_args(argv)
    path = args.out / "agent-watch.json"
    if args.render_only:
        publish(args.out, json.loads(path.read_text()))
        return 0
    with tempfile.TemporaryDirectory(prefix="agent-watch-") as tmp:
        report = measure(args, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    publish(args.out, report)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
