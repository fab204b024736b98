"""Interference benchmark, run as root inside the lab guest: `python -m temper.lab.interference`.

    python -m temper.lab.interference --scx-layered PATH --out FILE
                                      [--repeats N] [--duration-s S] [--period-us P] [--work-us W]

It builds a simulated node (`SimulatedNode`) with three pods:

- `lc`: Guaranteed, 1 CPU, PriorityClass temper-critical. Its container runs a request/response
  server doing a fixed amount of busy work per request (`--work-us`, calibrated once at start,
  with the node idle, into a loop count that every scenario then uses), and an open-loop client
  that sends one request every `--period-us` (default 10 ms) over a UNIX seqpacket socket pair.
  Under TCG one request's IPC and wake-ups cost far more than its 300 us of work (~3 ms of guest
  CPU all told), so at one request every 3 ms the LC pod backlogged beside the batch.
  Latency is measured from each request's *scheduled* send time to its response, so queueing
  and a late client both count (no coordinated omission).
- `trainer` (temper-low) and `etl` (temper-background): Burstable, each running `2 x vCPUs / 2`
  CPU-bound spinning processes, so together they want twice the node's CPUs. Each spinner counts
  its loop iterations and publishes (count, CLOCK_MONOTONIC time) in a file; throughput is the
  sum of each spinner's count delta over its own time delta.

The workload processes are `temper.lab.lcworkload`'s roles (server, client, batch); each moves
itself into its container's cgroup (`cgroup.procs`) before it does any work, and every one of
them is started before scx_layered ever attaches.

Scenarios, interleaved in each repeat (the order rotates by one each repeat, against drift):

- `alone`: the batch spinners stopped (SIGSTOP), stock scheduler;
- `stock`: batch running, stock scheduler, kubelet's cgroup weights as SimulatedNode writes them;
- `stock_cpu_idle`: as `stock` with `cpu.idle=1` on both batch pods' cgroups and on the
  Burstable QoS slice that holds them (reset after). `cpu.idle` only ranks a cgroup against its
  siblings, and the LC pod (Guaranteed) is a sibling of that slice, not of the batch pods: on
  the pods alone it would change nothing between LC and batch;
- `temper`: `temper-agent` enforcing the pods with the real scx_layered. The agent is started
  for each temper scenario (batch stopped while scx_layered attaches, which takes 18-35 s under
  single-threaded TCG), measured once attached, and stopped with SIGTERM afterwards, so every
  other scenario runs on the stock scheduler.

Per scenario and repeat it records LC p50/p99/p99.9 latency (µs), responses lost (none arrived
within the drain time), batch iterations per second, node CPU utilization (from /proc/stat
deltas) and, for `temper`, per-layer statistics from the scx_layered stats socket. Pooled
figures (all repeats' latencies together) and ratios of each scenario's p99 to `alone`'s go in
the JSON written to `--out`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temper.host.errors import HostError
from temper.host.sched_ext import SchedExtStatus, SchedState, read_sched_ext
from temper.host.scxstats import STATS_SOCKET, read_layer_stats
from temper.lab.agentrun import AGENT_LOG, enforcing, start_agent, stop_agent
from temper.lab.lcworkload import CGROUP_ROOT, busy
from temper.lab.measure import dmesg_sched_ext, idle_util, latency_figures, read_cpu_times
from temper.lab.node import RunningPod, SimulatedNode
from temper.lab.proof import LabPod, lab_pod, wait
from temper.policy.tiers import QosClass

ROOT = Path("/")
WORK = Path("/run/temper-lab-interference")
SCENARIOS = ("alone", "stock", "stock_cpu_idle", "temper")
BATCH_PODS = ("trainer", "etl")
WARMUP_S = 2.0  # after a scenario's switch, before measuring
ATTACH_TIMEOUT_S = 240.0
HOLD_S = 40.0  # how long after the batch starts scx_layered must stay attached (watchdog: 30 s)

PODS: tuple[LabPod, ...] = (
    lab_pod("lc", QosClass.GUARANTEED, 1000, "temper-critical", ()),
    lab_pod("trainer", QosClass.BURSTABLE, 500, "temper-low", ()),
    lab_pod("etl", QosClass.BURSTABLE, 250, "temper-background", ()),
)


@dataclass
class Spinner:
    popen: subprocess.Popen[bytes]
    counter: Path

    def sample(self) -> tuple[int, float]:
        words = self.counter.read_text().split()
        return int(words[0]), float(words[1])


@dataclass
class Bench:
    scx_layered: Path
    repeats: int
    duration_s: float
    period_us: int
    work_us: int
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    spinners: list[Spinner] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    latencies: dict[str, list[int]] = field(default_factory=dict)
    client: subprocess.Popen[bytes] | None = None
    pod_cgroups: dict[str, str] = field(default_factory=dict)  # pod name -> its cgroup path

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def spawn(self, role_args: list[str], pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "temper.lab.lcworkload", *role_args]
        popen = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=tuple(pass_fds)
        )
        self.children.append(popen)
        return popen

    def run(self) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        (WORK / "pods").mkdir(exist_ok=True)
        self.facts["vcpus"] = os.cpu_count()
        self.facts["kernel"] = os.uname().release
        self.facts["iterations_per_request"] = iterations = self.calibrate()
        with SimulatedNode(CGROUP_ROOT) as node:
            running = {p.pod.name: node.add_pod(p.pod, p.containers) for p in PODS}
            for p in PODS:
                (WORK / "pods" / f"{p.pod.name}.json").write_text(json.dumps(p.manifest))
            self.facts["cgroups"] = {name: r.container_paths["app"] for name, r in running.items()}
            self.pod_cgroups = {name: r.path for name, r in running.items()}
            try:
                self.facts["idle_cpu_util_pct_pods_only"] = idle_util(3.0)
                self.start_workloads(running, iterations)
                self.facts["idle_cpu_util_pct_all_started"] = idle_util(3.0)
                self.scenarios(running)
            finally:
                for child in self.children:
                    child.kill()
                    child.wait()
                self.facts["dmesg_sched_ext"] = dmesg_sched_ext()

    def calibrate(self) -> int:
        """Loop iterations for `work_us` of CPU, with the node idle: the median of 7 trials."""
        probe = 20_000
        busy(probe)
        rates = []
        for _ in range(7):
            start = time.perf_counter()
            busy(probe)
            rates.append(probe / (time.perf_counter() - start))
        rate = sorted(rates)[len(rates) // 2]
        self.facts["calibration_iter_per_s"] = [round(r) for r in rates]
        iterations = max(round(rate * self.work_us / 1e6), 1)
        self.log(f"calibrated: {iterations} iterations ~ {self.work_us} us ({rate:.0f}/s)")
        return iterations

    def start_workloads(self, running: dict[str, RunningPod], iterations: int) -> None:
        lc = running["lc"].container_paths["app"]
        server_end, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd_s, fd_c = server_end.fileno(), client_end.fileno()
        self.spawn(
            [
                "--role",
                "server",
                "--cgroup",
                lc,
                "--fd",
                str(fd_s),
                "--iterations",
                str(iterations),
            ],
            [fd_s],
        )
        self.client = self.spawn(["--role", "client", "--cgroup", lc, "--fd", str(fd_c)], [fd_c])
        server_end.close()
        client_end.close()
        vcpus = os.cpu_count() or 1
        per_pod = max(vcpus * 2 // len(BATCH_PODS), 1)
        for name in BATCH_PODS:
            path = running[name].container_paths["app"]
            for i in range(per_pod):
                counter = WORK / f"batch-{name}-{i}"
                popen = self.spawn(["--role", "batch", "--cgroup", path, "--counter", str(counter)])
                self.spinners.append(Spinner(popen, counter))
        for child in self.children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"workload {child.args!r} did not start: {line!r}")
        self.facts["batch_processes"] = len(self.spinners)
        self.set_batch(running=False)
        self.log(f"workloads up: server, client, {len(self.spinners)} spinners")

    def set_batch(self, *, running: bool) -> None:
        for spinner in self.spinners:
            spinner.popen.send_signal(signal.SIGCONT if running else signal.SIGSTOP)

    def scenarios(self, running: dict[str, RunningPod]) -> None:
        for name in SCENARIOS:
            self.latencies[name] = []
        for repeat in range(self.repeats):
            order = SCENARIOS[repeat % 4 :] + SCENARIOS[: repeat % 4]
            for name in order:
                self.log(f"repeat {repeat}: {name}")
                result = self.scenario(name, running)
                result.update({"scenario": name, "repeat": repeat})
                self.runs.append(result)
                self.log(
                    f"  p50={result['lc_p50_us']} p99={result['lc_p99_us']} "
                    f"p99.9={result['lc_p999_us']} lost={result['lost']} "
                    f"batch={result['batch_ops_per_s']:.0f}/s cpu={result['cpu_util_pct']:.1f}%"
                )

    def scenario(self, name: str, running: dict[str, RunningPod]) -> dict[str, Any]:
        if name == "alone":
            self.set_batch(running=False)
            return self.measure(name)
        if name == "stock":
            self.set_batch(running=True)
            return self.measure(name)
        if name == "stock_cpu_idle":
            pods = [running[p].path.rstrip("/") for p in BATCH_PODS]
            qos_slices = sorted({str(Path(p).parent) for p in pods})
            self.facts["cpu_idle_cgroups"] = qos_slices + pods
            with self.cpu_idle(qos_slices + pods):
                self.set_batch(running=True)
                return self.measure(name)
        return self.temper_scenario()

    @contextlib.contextmanager
    def cpu_idle(self, paths: Sequence[str]) -> Iterator[None]:
        saved = {p: (CGROUP_ROOT / p / "cpu.weight").read_text() for p in paths}
        for p in paths:
            (CGROUP_ROOT / p / "cpu.idle").write_text("1\n")
        try:
            yield
        finally:
            for p, weight in saved.items():
                (CGROUP_ROOT / p / "cpu.idle").write_text("0\n")
                (CGROUP_ROOT / p / "cpu.weight").write_text(weight)

    def temper_scenario(self) -> dict[str, Any]:
        self.set_batch(running=False)
        agent = start_agent(WORK, self.scx_layered)
        try:
            started = time.monotonic()
            attached = wait(enforcing, ATTACH_TIMEOUT_S)
            attach_s = round(time.monotonic() - started, 1)
            status = read_sched_ext(ROOT)
            self.facts["scheduler_ops"] = status.ops
            self.log(f"  scx_layered attached={attached} after {attach_s} s ({status.ops})")
            if not attached:
                raise RuntimeError(f"scx_layered did not attach in {ATTACH_TIMEOUT_S} s")
            wait(STATS_SOCKET_PATH.exists, 30)
            self.set_batch(running=True)
            batch_started = time.monotonic()
            result = self.measure("temper")
            result["attach_s"] = attach_s
            self.enforcement_checks(result, status, batch_started)
            return result
        finally:
            self.set_batch(running=False)
            code = stop_agent(agent)
            stock = wait(lambda: read_sched_ext(ROOT).state is SchedState.DISABLED, 30)
            self.log(f"  agent stopped (exit {code}); stock scheduler: {stock}")
            self.settle(self.facts.get("idle_cpu_util_pct_all_started", 0.0))
            tail = (WORK / AGENT_LOG).read_text(errors="replace").splitlines()[-12:]
            self.facts.setdefault("agent_log_tails", []).append(tail)
            self.log("  agent log: " + "\n    ".join(tail))

    def enforcement_checks(
        self, result: dict[str, Any], status: SchedExtStatus, batch_started: float
    ) -> None:
        """Layer stats at the phase's end; whether scx_layered held through it and HOLD_S."""
        try:
            result["layers_at_end"] = {
                layer: {"tasks": s.tasks, "util": s.util, "cur_nr_cpus": s.cur_nr_cpus}
                for layer, s in read_layer_stats(ROOT).items()
            }
        except HostError as exc:
            result["layers_at_end_error"] = str(exc)
        after = read_sched_ext(ROOT)
        result["still_enforcing"] = after.is_ours()
        result["enable_seq"] = [status.enable_seq, after.enable_seq]
        result["enforced_whole_phase"] = after.is_ours() and after.enable_seq == status.enable_seq
        # Keep the batch on a while longer: does scx_layered stay attached under it?
        left = HOLD_S - (time.monotonic() - batch_started)
        dropped = (
            not after.is_ours()
            or after.enable_seq != status.enable_seq
            or wait(lambda: not read_sched_ext(ROOT).is_ours(), max(left, 0))
        )
        result["hold_check_s"] = HOLD_S
        result["detached_within_hold"] = dropped
        if dropped:
            result["detached_after_batch_start_s"] = round(time.monotonic() - batch_started, 1)
        self.log(
            f"  enforced whole phase: {result['enforced_whole_phase']}; "
            f"detached within {HOLD_S:g} s of batch: {dropped}"
        )

    def measure(self, name: str) -> dict[str, Any]:
        if name != "temper" and read_sched_ext(ROOT).state is not SchedState.DISABLED:
            raise RuntimeError(f"{name}: a sched_ext scheduler is still loaded")
        time.sleep(WARMUP_S)
        assert self.client is not None
        assert self.client.stdin is not None
        assert self.client.stdout is not None
        out = WORK / "client.json"
        before = [s.sample() for s in self.spinners]
        busy_0, total_0 = read_cpu_times()
        usage_0, started = self.pod_usage_us(), time.monotonic()
        self.client.stdin.write(f"run {self.duration_s} {self.period_us} {out}\n".encode())
        self.client.stdin.flush()
        if self.client.stdout.readline().strip() != b"done":
            raise RuntimeError("the LC client died")
        busy_1, total_1 = read_cpu_times()
        usage_1, wall_us = self.pod_usage_us(), (time.monotonic() - started) * 1e6
        after = [s.sample() for s in self.spinners]
        client = json.loads(out.read_text())
        self.latencies[name] += client["latencies_us"]
        ops = sum(
            (c1 - c0) / (t1 - t0)
            for (c0, t0), (c1, t1) in zip(before, after, strict=True)
            if t1 > t0
        )
        figures: dict[str, Any] = latency_figures(client["latencies_us"])
        figures.update(
            {
                "lost": client["lost"],
                "late_sends": client["late_sends"],
                "sent": client["sent"],
                "batch_ops_per_s": round(ops),
                "cpu_util_pct": round(100 * (busy_1 - busy_0) / max(total_1 - total_0, 1), 1),
                "pod_cpus": {n: round((usage_1[n] - usage_0[n]) / wall_us, 3) for n in usage_0},
            }
        )
        return figures

    def pod_usage_us(self) -> dict[str, int]:
        """CPU time (us) each pod's cgroup has used so far (`cpu.stat` usage_usec)."""
        usage = {}
        for name, path in self.pod_cgroups.items():
            stat = (CGROUP_ROOT / path.strip("/") / "cpu.stat").read_text().split()
            usage[name] = int(stat[stat.index("usage_usec") + 1])
        return usage

    def settle(self, floor_pct: float) -> None:
        """After a temper phase, wait (at most 30 s) until the idle node is back near its floor:
        the scheduler's teardown must not land in the next scenario's measurement."""
        deadline = time.monotonic() + 30
        util = idle_util(1.0)
        while util > floor_pct + 10 and time.monotonic() < deadline:
            util = idle_util(1.0)
        self.log(f"  settled: node {util}% busy (floor {floor_pct}%)")

    def report(self) -> dict[str, Any]:
        pooled: dict[str, dict[str, Any]] = {}
        for name in SCENARIOS:
            runs = [r for r in self.runs if r["scenario"] == name]
            if not runs:
                continue
            figures: dict[str, Any] = latency_figures(self.latencies[name])
            figures["batch_ops_per_s"] = round(sum(r["batch_ops_per_s"] for r in runs) / len(runs))
            figures["cpu_util_pct"] = round(sum(r["cpu_util_pct"] for r in runs) / len(runs), 1)
            figures["lost"] = sum(r["lost"] for r in runs)
            figures["repeats"] = len(runs)
            pooled[name] = figures
        alone = pooled.get("alone", {}).get("lc_p99_us")
        for figures in pooled.values():
            figures["p99_ratio_to_alone"] = (
                round(figures["lc_p99_us"] / alone, 2) if alone else None
            )
        for run in self.runs:
            same = [
                r for r in self.runs if r["scenario"] == "alone" and r["repeat"] == run["repeat"]
            ]
            base = same[0]["lc_p99_us"] if same else None
            run["p99_ratio_to_alone"] = round(run["lc_p99_us"] / base, 2) if base else None
        return {
            "kernel": os.uname().release,
            "scheduler_ops": self.facts.get("scheduler_ops"),
            "settings": {
                "repeats": self.repeats,
                "duration_s": self.duration_s,
                "period_us": self.period_us,
                "work_us": self.work_us,
                "warmup_s": WARMUP_S,
            },
            "facts": self.facts,
            "scenarios": pooled,
            "runs": self.runs,
        }


STATS_SOCKET_PATH = ROOT / STATS_SOCKET


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temper.lab.interference")
    parser.add_argument("--scx-layered", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--period-us", type=int, default=10_000)
    parser.add_argument("--work-us", type=int, default=300)
    args = parser.parse_args(argv)
    if args.scx_layered is None or args.out is None:
        parser.error("--scx-layered and --out are required")
    bench = Bench(args.scx_layered, args.repeats, args.duration_s, args.period_us, args.work_us)
    try:
        bench.run()
    finally:
        report = bench.report()
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if len(bench.runs) == args.repeats * len(SCENARIOS) else 1


if __name__ == "__main__":
    sys.exit(main())
