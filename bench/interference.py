"""Interference benchmark: LC tail latency beside CPU-bound batch, stock scheduler vs Temper.

Boots the lab's sched_ext kernel in QEMU (2 vCPUs, no SMT, single-threaded TCG) and runs
`python -m temper.lab.interference` there (see its docstring for the workload and scenarios):
an open-loop request/response LC pod (temper-critical, Guaranteed, 1 CPU) beside temper-low and
temper-background batch pods that want twice the node's CPUs, under four interleaved scenarios,
`alone`, `stock`, `stock_cpu_idle` and `temper` (temper-agent with the real scx_layered).

    python bench/interference.py [--repeats N] [--duration-s S] [--scx-layered PATH] [--out DIR]

Writes DIR/interference.json (figures, raw per-repeat figures, caveats) and DIR/interference.md
(the report), and prints the JSON's path last. The target is temper's p99 within 1.2x of alone's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from temper.lab.guestjob import (
    CORES,
    CPUS,
    MEMORY_MB,
    THREADS,
    pinned_scx_layered,
    run_module,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("alone", "stock", "stock_cpu_idle", "temper")
BATCH_PODS = ("trainer", "etl")
VM: dict[str, object] = {
    "cpus": CPUS,
    "cores": CORES,
    "threads": THREADS,
    "accel": "tcg",
    "tcg_threads": "single",
}
TARGET_RATIO = 1.2
VERDICT = {True: "met", False: "missed", None: "not measured"}
HOLD_TEXT = "40 s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument(
        "--scx-layered",
        type=Path,
        default=None,
        help="default: $SCX_LAYERED, else the pinned build",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "reports")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite DIR/interference.md and the caveats from DIR/interference.json; no run",
    )
    args = parser.parse_args()
    json_path = args.out / "interference.json"
    if args.render_only:
        old = json.loads(json_path.read_text())
        report = build_report(old, old["kernel"], old["guest_wall_s"], old["guest_exit"])
        report["date"] = old["date"]
        write_report(args.out, "interference", report, render_markdown(report))
        return 0
    if args.scx_layered is None:
        pinned = os.environ.get("SCX_LAYERED")
        args.scx_layered = Path(pinned) if pinned else pinned_scx_layered()
    if not args.scx_layered.is_file():
        parser.error(f"{args.scx_layered}: no scx_layered there (make scx-layered builds it)")
    job = run_module(
        "temper.lab.interference",
        [
            f"--scx-layered={args.scx_layered}",
            f"--repeats={args.repeats}",
            f"--duration-s={args.duration_s}",
        ],
        timeout_s=1800,
    )
    if not job.report:
        print(f"the guest wrote no report (exit {job.returncode})", file=sys.stderr)
        return 1
    report = build_report(job.report, job.kernel, job.wall_s, job.returncode)
    write_report(args.out, "interference", report, render_markdown(report))
    return 0 if job.returncode == 0 else 1


def build_report(
    guest: dict[str, Any], release: str, wall_s: float, returncode: int
) -> dict[str, Any]:
    scenarios = guest["scenarios"]
    runs = guest["runs"]
    ratios = {name: s.get("p99_ratio_to_alone") for name, s in scenarios.items()}
    per_repeat = {
        name: [r["p99_ratio_to_alone"] for r in runs if r["scenario"] == name] for name in SCENARIOS
    }
    report: dict[str, Any] = {
        "benchmark": "interference",
        "date": time.strftime("%Y-%m-%d"),
        "kernel": guest.get("kernel", release),
        "scheduler_ops": guest.get("scheduler_ops") or "",
        "vm": {**VM, "memory_mb": MEMORY_MB},
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "settings": guest["settings"],
        "scenarios": scenarios,
        "p99_ratio_to_alone": ratios,
        "p99_ratio_to_alone_per_repeat": per_repeat,
        "target": {"temper_p99_ratio_max": TARGET_RATIO, "met": None},
        "runs": runs,
        "facts": guest["facts"],
        "guest_exit": returncode,
        "guest_wall_s": round(wall_s, 1),
    }
    temper_ratio = ratios.get("temper")
    if temper_ratio is not None:
        report["target"]["met"] = temper_ratio <= TARGET_RATIO
    report["batch_use_of_free_cpu"] = batch_use_of_free_cpu(runs, VM["cpus"])
    report["pod_cpus"] = mean_pod_cpus(runs)
    report["caveats"] = caveats(report)
    return report


def batch_use_of_free_cpu(runs: list[dict[str, Any]], cpus: object) -> dict[str, Any]:
    """How much of the CPU the critical layer does not own the batch pods kept busy.

    Per temper repeat: the batch pods' CPU time (their cgroups' `cpu.stat`) over the phase's
    wall time, over (node CPUs - CPUs the critical layer owned at the phase's end), in percent;
    target at least 95. Above 100 means the batch also ran on the critical CPU while the LC pod
    idled.
    """
    per_repeat = []
    for r in runs:
        pod_cpus = r.get("pod_cpus")
        if r["scenario"] != "temper" or not pod_cpus:
            continue
        owned = (r.get("layers_at_end") or {}).get("critical", {}).get("cur_nr_cpus", 1)
        free = int(str(cpus)) - owned
        batch = sum(pod_cpus.get(name, 0.0) for name in BATCH_PODS)
        per_repeat.append(
            {
                "repeat": r["repeat"],
                "critical_cpus": owned,
                "batch_cpus": round(batch, 3),
                "pct_of_free": round(batch / free * 100, 1) if free > 0 else None,
            }
        )
    values = [p["pct_of_free"] for p in per_repeat if p["pct_of_free"] is not None]
    mean = round(sum(values) / len(values), 1) if values else None
    return {
        "per_repeat": per_repeat,
        "mean_pct": mean,
        "target_pct": 95,
        "met": None if mean is None else mean >= 95,
    }


def mean_pod_cpus(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per scenario, each pod's mean CPUs used over the measured phases."""
    out: dict[str, dict[str, float]] = {}
    for name in SCENARIOS:
        phases = [r["pod_cpus"] for r in runs if r["scenario"] == name and r.get("pod_cpus")]
        pods = sorted({pod for phase in phases for pod in phase})
        if phases:
            out[name] = {
                p: round(sum(x.get(p, 0.0) for x in phases) / len(phases), 3) for p in pods
            }
    return out


def caveats(report: dict[str, Any]) -> list[str]:
    s = report["scenarios"]
    settings = report["settings"]
    floor = report["facts"].get("idle_cpu_util_pct_all_started")
    alone_cpu = s.get("alone", {}).get("cpu_util_pct")
    per_request = "not measured"
    if floor is not None and alone_cpu is not None:
        rate = 1e6 / settings["period_us"]
        cost_ms = (alone_cpu - floor) / 100 * report["vm"]["cpus"] / rate * 1e3
        per_request = (
            f"in `alone` the node was {alone_cpu}% busy against a {floor}% floor with every "
            f"process started and idle, i.e. ~{cost_ms:.1f} ms of guest CPU per request"
        )
    notes = [
        "Every figure was measured in a QEMU guest under TCG (software emulation), not on "
        "hardware: absolute latencies and throughput are emulated time and are not comparable "
        "to a real node's; only ratios between scenarios of this one run mean anything.",
        "Single-threaded TCG (`-accel tcg,thread=single`, chosen because multi-threaded TCG "
        "crashed this kernel intermittently) runs both vCPUs on ONE host thread, hence one host "
        "core: the guest's two CPUs never run at the same instant, and TCG's round-robin between "
        "vCPUs adds delay to every wake-up, even with the node otherwise idle (`alone`).",
        f"The host has {report['host']['cpus']} cores and was not otherwise isolated; "
        "run-to-run noise in a TCG guest is large (DESIGN.md section 7), so the scenarios are "
        "interleaved in each repeat (order rotated by one per repeat) and per-repeat ratios are "
        "given beside the pooled ones.",
        f"LC work is a Python loop calibrated once, on the idle guest, to ~{settings['work_us']} "
        f"us; one request every {settings['period_us']} us, open loop, latency from the "
        "scheduled send time. Pooled percentiles use every repeat's samples together; p99.9 of "
        f"~{int(settings['duration_s'] * 1e6 / settings['period_us'])} samples per repeat rests "
        "on a handful of samples per repeat.",
        "Batch throughput counts Python loop iterations (chunks of 2000) in 4 spinning "
        "processes, 2 per batch pod; node CPU utilization comes from the guest's /proc/stat and "
        "includes the LC pod, the harness, temper-agent and scx_layered.",
        "In `temper`, temper-agent is started per repeat and stopped (SIGTERM) afterwards, so the "
        "other scenarios run on the stock scheduler; the batch is stopped (SIGSTOP) while "
        "scx_layered attaches (18-35 s under TCG) and measuring starts after a 2 s warm-up.",
        "The request rate is one per 10 ms, not the 3 ms of DESIGN.md section 7's model: here "
        "each request crosses two processes over a socket, and under TCG that IPC and its "
        f"wake-ups cost far more than the {settings['work_us']} us of work: {per_request}, so "
        "one request per 3 ms saturates the LC pod (a 3 ms smoke run backlogged to hundreds of "
        "ms beside the batch). The figures are not comparable with that model's.",
        "Because both vCPUs share one host core, a busy batch vCPU also halves the speed of the "
        "LC's vCPU, whatever the guest's scheduler does: even a perfect partition (temper) "
        "cannot get back to `alone`, where the second vCPU idles. On real hardware with a core "
        "per CPU that cost does not exist; this lab overstates temper's ratio to alone.",
        "`stock_cpu_idle` sets `cpu.idle=1` on the two batch pods' cgroups and on the Burstable "
        "QoS slice holding them (it holds only them here): `cpu.idle` ranks a cgroup against its "
        "siblings only, and the Guaranteed LC pod is a sibling of the slice, not of the pods.",
        "2 vCPUs without SMT: the critical layer owns one CPU exclusively, and while the LC "
        "pod idles that CPU serves the lower tiers (the layer is not `protected`), so the batch "
        "can use more than the one CPU critical does not own. Tiers are served in strict order "
        "on shared CPUs (`--layer-order-by-weight`): background gets what low leaves, plus "
        "scx_layered's anti-stall turns.",
    ]
    if "temper" in s and "alone" in s:
        ratio = s["temper"]["p99_ratio_to_alone"]
        if ratio is not None and ratio > TARGET_RATIO:
            notes.append(
                f"Target missed: temper's p99 is {ratio:.2f}x alone's, "
                f"{(ratio / TARGET_RATIO - 1) * 100:.0f}% over the 1.2x target "
                f"({s['temper']['lc_p99_us']} us vs {s['alone']['lc_p99_us']} us). Why: "
                + (
                    "scx_layered did not stay attached through the measured phases (see the "
                    "next caveat), so the tail is the LC's backlog across the ejection and "
                    "re-attach, not a steady enforced state; also, "
                    if any(
                        r.get("enforced_whole_phase") is False
                        for r in report["runs"]
                        if r["scenario"] == "temper"
                    )
                    else ""
                )
                + "under single-threaded TCG the busy batch vCPU slows the LC vCPU "
                "whatever the guest's scheduler does (see above)" + _lc_cost(report) + "."
            )
        elif ratio is not None:
            notes.append(
                f"Target met: temper's p99 is {ratio:.2f}x alone's (target <= 1.2x), "
                "in this TCG run; see the per-repeat ratios for its spread."
            )
    temper_runs = [r for r in report["runs"] if r["scenario"] == "temper"]
    detached = [r for r in temper_runs if r.get("detached_within_hold")]
    broken = [r for r in temper_runs if r.get("enforced_whole_phase") is False]
    if detached:
        reasons = sorted(
            {
                line.split("] ", 1)[-1]
                for line in report["facts"].get("dmesg_sched_ext", [])
                if ("stall" in line or "failed" in line or "error" in line)
                and "unregistered" not in line
            }
        )
        notes.append(
            f"scx_layered was ejected by the kernel in {len(detached)} of {len(temper_runs)} "
            f"temper repeats ({len(broken)} of them during the measured phase, whose figures then "
            "mix enforced time, the stock scheduler and the restarted scx_layered's attach). "
            f"The kernel said: {'; '.join(reasons) or 'nothing logged'}. temper-agent saw the "
            "detach and started scx_layered again, as designed. This is a finding about the "
            "planned config on this 2-CPU shape (one CPU exclusive to the critical layer), not "
            "noise; its root cause was not established in this run."
        )
    held = [r for r in temper_runs if r.get("enforced_whole_phase")]
    if temper_runs and len(held) == len(temper_runs) and not detached:
        notes.append(
            f"scx_layered stayed attached in all {len(temper_runs)} temper phases and through "
            f"the {HOLD_TEXT} hold after the batch started (same `enable_seq`); before our "
            "patch (ADR 0003) the sched_ext watchdog ejected it in every such phase."
        )
    if all(name in s for name in ("temper", "stock", "stock_cpu_idle")):
        t = s["temper"]
        notes.append(
            "Against the baselines of this run: temper's p99 was "
            f"{t['lc_p99_us'] / s['stock']['lc_p99_us']:.2f}x stock's and "
            f"{t['lc_p99_us'] / s['stock_cpu_idle']['lc_p99_us']:.2f}x stock_cpu_idle's; its "
            f"p99.9 {t['lc_p999_us'] / s['stock']['lc_p999_us']:.2f}x and "
            f"{t['lc_p999_us'] / s['stock_cpu_idle']['lc_p999_us']:.2f}x. Under TCG the LC's "
            "own slowdown (above) dominates every batch scenario; these ratios are the only "
            "scheduler-to-scheduler comparison this lab supports."
        )
    lost = {name: f["lost"] for name, f in s.items() if f.get("lost")}
    if lost:
        notes.append(
            f"Responses that never arrived within the drain time (counted with the latency they "
            f"had reached, a lower bound): {lost}."
        )
    return notes


def _lc_cost(report: dict[str, Any]) -> str:
    """The LC pod's CPU time per request by scenario: the emulation's slowdown, measured."""
    cpus = report.get("pod_cpus") or {}
    rate = 1e6 / report["settings"]["period_us"]
    costs = {n: c["lc"] / rate * 1000 for n, c in cpus.items() if "lc" in c}
    if "alone" not in costs or "temper" not in costs:
        return ""
    return (
        f": the LC pod's own CPU time per request (its cgroup) was {costs['alone']:.1f} ms "
        f"alone, {costs['temper']:.1f} ms under temper and {costs.get('stock', 0):.1f} ms under "
        "stock for the same work, i.e. its vCPU ran slower while the batch vCPU was busy"
    )


def render_markdown(report: dict[str, Any]) -> str:
    s = report["scenarios"]
    st = report["settings"]
    facts = report["facts"]
    lines = [
        "# Interference benchmark: LC tail latency beside batch",
        "",
        f"Run {report['date']}. **Measured under QEMU TCG, not on hardware** (see caveats).",
        "",
        "## Setup",
        "",
        f"- Kernel `{report['kernel']}` (Debian, sched_ext) in QEMU, `-accel tcg,thread=single`, "
        f"`-smp {report['vm']['cpus']},cores={report['vm']['cores']},threads=1` "
        f"(2 vCPUs, no SMT), {report['vm']['memory_mb']} MB; host {report['host']['cpus']} cores.",
        f"- Scheduler in `temper`: `{report['scheduler_ops']}` (scx_layered started by "
        "temper-agent from the pods' manifests).",
        "- Simulated node (`temper.lab.node.SimulatedNode`, systemd driver, kubelet weights):",
        "  - `lc`: Guaranteed, 1 CPU, PriorityClass `temper-critical`: a request/response "
        f"server doing ~{st['work_us']} us of busy work per request "
        f"({facts.get('iterations_per_request')} loop iterations, calibrated once), driven open "
        f"loop at one request every {st['period_us']} us by a client in the same container over "
        "a UNIX seqpacket socket; latency from the scheduled send time to the response.",
        "  - `trainer` (`temper-low`, Burstable 500m) and `etl` (`temper-background`, Burstable "
        f"250m): {facts.get('batch_processes')} CPU-bound spinning processes in all (2x vCPUs).",
        f"- {st['repeats']} repeats x 4 scenarios x {st['duration_s']:g} s, interleaved (order "
        f"rotated each repeat), {st['warmup_s']:g} s warm-up each. Scenarios: `alone` (batch "
        "stopped), `stock` (batch on, stock scheduler, kubelet weights), `stock_cpu_idle` "
        "(batch pods' cgroups `cpu.idle=1`), `temper` (temper-agent + scx_layered enforcing).",
        f"- Guest wall time {report['guest_wall_s']} s.",
        "",
        "## Results (pooled over repeats)",
        "",
        "| scenario | p50 us | p99 us | p99.9 us | max us | p99 / alone | batch iter/s "
        "| node CPU % | lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in SCENARIOS:
        if name not in s:
            continue
        f = s[name]
        ratio = f["p99_ratio_to_alone"]
        lines.append(
            f"| {name} | {f['lc_p50_us']} | {f['lc_p99_us']} | {f['lc_p999_us']} | "
            f"{f['lc_max_us']} | {ratio:.2f} | {f['batch_ops_per_s']} | {f['cpu_util_pct']} | "
            f"{f['lost']} |"
        )
    use = report.get("batch_use_of_free_cpu") or {}
    lines += [
        "",
        f"Target: `temper` p99 within {TARGET_RATIO}x of `alone`: "
        f"**{'met' if report['target']['met'] else 'missed'}**.",
        "",
        "Batch use of the CPU the critical layer does not own (the batch pods' CPU time from "
        "their cgroups, over node CPUs minus the critical layer's, per temper repeat): "
        f"{[p['pct_of_free'] for p in use.get('per_repeat', [])]} %, mean {use.get('mean_pct')} % "
        f"(target at least 95 %: **{VERDICT[use.get('met')]}**).",
        "",
        "CPUs each pod used (its cgroup's `cpu.stat` usage over the phase's wall time; mean "
        "over repeats):",
        "",
        "| scenario | " + " | ".join(f"{p} CPUs" for p in ("lc", *BATCH_PODS)) + " |",
        "|---|" + "---:|" * (1 + len(BATCH_PODS)),
        *[
            f"| {name} | " + " | ".join(str(c.get(p, "")) for p in ("lc", *BATCH_PODS)) + " |"
            for name, c in (report.get("pod_cpus") or {}).items()
        ],
        "",
        "## Raw figures per repeat",
        "",
        "| repeat | scenario | p50 us | p99 us | p99.9 us | p99 / alone (same repeat) "
        "| batch iter/s | node CPU % | lost | late sends |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        ratio = r.get("p99_ratio_to_alone")
        lines.append(
            f"| {r['repeat']} | {r['scenario']} | {r['lc_p50_us']} | {r['lc_p99_us']} | "
            f"{r['lc_p999_us']} | {'' if ratio is None else f'{ratio:.2f}'} | "
            f"{r['batch_ops_per_s']} | {r['cpu_util_pct']} | {r['lost']} | {r['late_sends']} |"
        )
    temper_runs = [r for r in report["runs"] if r["scenario"] == "temper"]
    if temper_runs:
        lines += [
            "",
            "## scx_layered layers during `temper`",
            "",
            "CPUs each layer owned and its task count at the end of each measured phase "
            "(`temper.host.scxstats.read_layer_stats`). Per-pod CPU time is in the table above: "
            "the stats socket's utilization is a rate since the connection's previous request, "
            "and scx_layered's server here answered one request per connection.",
            "",
            "| repeat | attach s | layer | CPUs | tasks |",
            "|---:|---:|---|---:|---:|",
        ]
        for r in temper_runs:
            end = r.get("layers_at_end", {})
            for layer in sorted(end):
                e = end[layer]
                lines.append(
                    f"| {r['repeat']} | {r.get('attach_s')} | {layer} | "
                    f"{e.get('cur_nr_cpus', '')} | {e.get('tasks', '')} |"
                )
    if temper_runs:
        lines += [
            "",
            "Did scx_layered stay attached? (`enable_seq` before and after the phase; then the "
            f"batch kept running until {HOLD_TEXT} after it started, watching for a detach.)",
            "",
            "| repeat | enforced whole phase | enable_seq | detached within hold "
            "| detach seen at (s after batch start; when checked, see dmesg for the moment) |",
            "|---:|---|---|---|---:|",
        ]
        for r in temper_runs:
            lines.append(
                f"| {r['repeat']} | {r.get('enforced_whole_phase')} | {r.get('enable_seq')} | "
                f"{r.get('detached_within_hold')} | {r.get('detached_after_batch_start_s', '')} |"
            )
    dmesg = report["facts"].get("dmesg_sched_ext") or []
    if dmesg:
        lines += ["", "Kernel sched_ext messages (guest dmesg):", "", "```", *dmesg, "```"]
    lines += ["", "## Caveats", ""]
    lines += [f"- {note}" for note in report["caveats"]]
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        f"python bench/interference.py --repeats {st['repeats']} --duration-s {st['duration_s']:g}",
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
