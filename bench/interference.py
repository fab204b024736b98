"""Interference benchmark: the critical pod's tail beside CPU-bound batch, stock vs Temper.

Boots the lab's sched_ext kernel in QEMU (2 vCPUs, no SMT) and runs
`python -m temper_testing.lab.interference` there (its docstring has the workload and scenarios):
two latency-critical profiles (`light`: a lone sleeper; `heavy`: four workers, bursts of four) in a
temper-critical Guaranteed pod, beside temper-low and temper-background batch that wants twice the
node's CPUs, under six interleaved scenarios: `alone`, `alone_pinned`, `stock`, `partitioned`
(a hard partition, for reference), `stock_cpu_idle` and `temper` (temper-agent with the real
scx_layered), plus any `--variant` experiments.

    python bench/interference.py [--repeats N] [--duration-s S] [--variant SPEC]...
                                 [--scx-layered PATH] [--out DIR] [--render-only]

Writes DIR/interference.json (figures, per-repeat ratios, verdicts, caveats) and
DIR/interference.md, and prints the JSON's path last. Verdicts are medians of per-repeat ratios
(`temper_testing.lab.verdict`). `--render-only` rewrites the markdown (and the figures block of
docs/lab.md) from an existing JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from temper_testing.lab.errors import LabError
from temper_testing.lab.guestjob import (
    MEASURE_KERNEL_ARGS,
    lab_accel,
    pinned_scx_layered,
    run_module,
    write_doc_block,
    write_report,
)
from temper_testing.lab.interference import (
    ATTACH_TIMEOUT_S,
    HOLD_S,
    REMEASURES,
    SCENARIOS,
    WARMUP_S,
)
from temper_testing.lab.lcworkload import DRAIN_S, PROFILES
from temper_testing.lab.variants import AGENT, Variant, parse_variant
from temper_testing.lab.verdict import (
    AGENT_COST_METRICS,
    TARGETS,
    agent_cost,
    compare,
    mean_of,
    profile_verdicts,
)

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "bench" / "reports"
FIGURES = "interference-figures"  # the docs/lab.md block lab_figures() fills
RENDER = "python bench/interference.py --render-only"
FIGURE_DOCS = {FIGURES: ("docs/lab.md",)}  # tests/unit/test_doc_figures.py keeps them equal
BOOT_AND_SETUP_S = 900  # boot, calibration, workloads, and the report at the end: a ceiling


def guest_timeout_s(repeats: int, duration_s: float, variants: int) -> float:
    """The guest's ceiling from the run's plan: every phase measured the most times it can be,
    every enforced phase waiting its whole attach timeout."""
    phases = repeats * (len(SCENARIOS) + variants) * len(PROFILES)
    enforced = repeats * (1 + variants)
    per_phase = (duration_s + WARMUP_S + DRAIN_S) * (1 + REMEASURES)
    return BOOT_AND_SETUP_S + phases * per_phase + enforced * (ATTACH_TIMEOUT_S + HOLD_S + 30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:LAYER.F=V,...")
    parser.add_argument(
        "--scx-layered",
        type=Path,
        default=None,
        help="default: $SCX_LAYERED, else the pinned build",
    )
    parser.add_argument("--cpu", help="QEMU CPU model for a probe (default: the lab's)")
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite DIR/interference.md and docs/lab.md's figures from DIR/interference.json",
    )
    args = parser.parse_args()
    if args.render_only:
        publish(args.out, json.loads((args.out / "interference.json").read_text()))
        return 0
    for spec in args.variant:
        try:
            parse_variant(spec)  # refused here, before a guest boots for it
        except LabError as exc:
            parser.error(str(exc))
    if args.scx_layered is None:
        pinned = os.environ.get("SCX_LAYERED")
        args.scx_layered = Path(pinned) if pinned else pinned_scx_layered()
    if not args.scx_layered.is_file():
        parser.error(f"{args.scx_layered}: no scx_layered there (make scx-layered builds it)")
    job = run_module(
        "temper_testing.lab.interference",
        [
            f"--scx-layered={args.scx_layered}",
            f"--repeats={args.repeats}",
            f"--duration-s={args.duration_s}",
            *(f"--variant={v}" for v in args.variant),
        ],
        timeout_s=guest_timeout_s(args.repeats, args.duration_s, len(args.variant)),
        accel=lab_accel(args.cpu) if args.cpu else None,
        kernel_args=MEASURE_KERNEL_ARGS,
    )
    if not job.report:
        print(f"the guest wrote no report (exit {job.returncode})", file=sys.stderr)
        return 1
    print(f"the guest's raw figures: {job.guest_json}", file=sys.stderr)
    report = build_report(job.report, job.kernel, job.wall_s, job.returncode, job.vm)
    if job.returncode != 0 and job.guest_json is not None:
        # A failed run's partial figures are evidence, not a result: kept with its run.
        print(f"the guest failed (exit {job.returncode}); its partial report:", file=sys.stderr)
        write_report(job.guest_json.parent, "interference", report, render_markdown(report))
        return 1
    publish(args.out, report)
    return 0


def publish(out: Path, report: dict[str, Any]) -> None:
    """Write the report; when it is the committed one, docs/lab.md's figures block too."""
    write_report(out, "interference", report, render_markdown(report))
    if out.resolve() == REPORTS:
        write_doc_block(FIGURES, RENDER, lab_figures(report), REPO / "docs" / "lab.md")


def build_report(
    guest: dict[str, Any],
    release: str,
    wall_s: float,
    returncode: int,
    vm: dict[str, Any],
) -> dict[str, Any]:
    runs = guest["runs"]
    settings = guest["settings"]
    cpus = int(vm["cpus"])
    profiles = {}
    for profile in settings["profiles"]:
        profiles[profile] = {
            "scenarios": scenario_figures(guest, profile, settings["scenarios"]),
            "verdicts": profile_verdicts(runs, profile, cpus),
        }
    experiments = {
        name: {p: profile_verdicts(runs, p, cpus, f"temper:{name}") for p in settings["profiles"]}
        for name in settings.get("variants", {})
    }
    report: dict[str, Any] = {
        "benchmark": "interference",
        "date": time.strftime("%Y-%m-%d"),
        "kernel": guest.get("kernel", release),
        "scheduler_ops": guest.get("scheduler_ops") or "",
        "vm": vm,
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "settings": settings,
        "profiles": profiles,
        "experiments": experiments,
        "agent_cost": {p: agent_cost(runs, p) for p in settings["profiles"]},
        "against_partition": {
            p: compare(runs, p, "temper", "partitioned") for p in settings["profiles"]
        },
        "enforcement": enforcement(runs),
        "layer_counters": layer_counters(runs),
        "cross_cpu": cross_cpu(runs),
        "runs": runs,
        "facts": guest["facts"],
        "guest_exit": returncode,
        "guest_wall_s": round(wall_s, 1),
    }
    report["caveats"] = caveats(report)
    return report


def scenario_figures(guest: dict[str, Any], profile: str, scenarios: list[str]) -> dict[str, Any]:
    """Per scenario: percentiles pooled over repeats, and means of the per-phase figures."""
    out = {}
    for name in scenarios:
        pooled = guest["pooled"].get(f"{name}/{profile}")
        if pooled is None:
            continue
        runs = [r for r in guest["runs"] if r["scenario"] == name and r["profile"] == profile]
        out[name] = {
            **pooled,
            "repeats": len(runs),
            "lost": sum(r["lost"] for r in runs),
            **{
                metric: mean_of(guest["runs"], profile, name, metric)
                for metric in ("lc_cpu_us_per_request", "batch_ops_per_s", "cpu_util_pct")
            },
            "pod_cpus": {
                pod: round(sum(r["pod_cpus"][pod] for r in runs) / len(runs), 3)
                for pod in runs[0]["pod_cpus"]
            },
        }
    return out


def enforcement(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Did scx_layered stay attached through every enforced phase and its hold?"""
    phases = {
        (r["scenario"], r["repeat"]): r
        for r in runs
        if r["scenario"].startswith("temper") and "enforced_whole_phase" in r
    }
    held = [
        k for k, r in phases.items() if r["enforced_whole_phase"] and not r["detached_within_hold"]
    ]
    return {
        "phases": len(phases),
        "held": len(held),
        "dropped": sorted(f"{s} repeat {n}" for (s, n) in phases if (s, n) not in held),
    }


SHOWN_COUNTERS = (
    "util",
    "total",
    "sel_local",
    "enq_wakeup",
    "preempt",
    "preempt_fail",
    "enq_expire",
    "keep_fail_busy",
)


def layer_counters(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per enforced scenario and layer: the median over its phases of scx_layered's counters
    (over each phase, on one stats connection held from the batch's start to its end)."""
    seen: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in runs:
        for layer, counters in (r.get("layers_at_end") or {}).items():
            for key, value in counters.items():
                if isinstance(value, int | float):
                    seen.setdefault(r["scenario"], {}).setdefault(layer, {}).setdefault(key, [])
                    seen[r["scenario"]][layer][key].append(float(value))
    return {
        scenario: {
            layer: {k: round(statistics.median(v), 4) for k, v in counters.items()}
            for layer, counters in layers.items()
        }
        for scenario, layers in seen.items()
    }


def cross_cpu(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per scenario and profile, medians over its phases of what could reach one vCPU from the
    other: QEMU's non-vCPU threads' CPU on the host (`hostmeter`), and each guest CPU's
    interrupts per second (timer, reschedule, function-call and TLB-shootdown IPIs, devices)."""
    seen: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        if "interrupts" not in r or not r.get("phase_s"):
            continue  # a report from before these were recorded
        row = seen.setdefault(f"{r['scenario']}/{r['profile']}", {})
        if "host" in r:
            row.setdefault("emulator_cpus", []).append(r["host"]["emulator_cpus"])
        for cpu, counts in r["interrupts"].items():
            for kind, count in counts.items():
                row.setdefault(f"{cpu}_{kind}", []).append(count / r["phase_s"])
    return {
        key: {k: round(statistics.median(v), 3) for k, v in row.items()}
        for key, row in seen.items()
    }


def verdict_text(v: dict[str, Any]) -> str:
    if v.get("median") is None:
        return "not measured"
    word = "**met**" if v["met"] else "**missed**"
    fragile = ", one repeat decides" if v.get("fragile") else ""
    return f"{v['median']:.2f} ({v['min']:.2f}-{v['max']:.2f}) {word}{fragile}"


def caveats(report: dict[str, Any]) -> list[str]:
    vm = report["vm"]
    st = report["settings"]
    notes = [
        f"Every figure was measured in a QEMU guest under TCG ({vm['accel']}, {vm['qemu']}), "
        "software emulation, not on hardware: absolute latencies are emulated time; only "
        "ratios between scenarios of this one run mean anything.",
        f"The host had {vm['host_cpus']} cores; over the run it was {vm['host_busy_cpus']} CPUs "
        f"busy on average, {vm['host_qemu_cpus']} of them QEMU's and {vm['host_other_cpus']} "
        f"anything else, of which {vm.get('host_steal_cpus', 'an unmeasured part')} stolen by "
        "the hypervisor (the host is itself a VM). Both come in bursts that stretch whichever "
        "phase they fall in: the likeliest source of the wide per-repeat ranges.",
        "Verdicts are the median of per-repeat ratios (each ratio within one interleaved round), "
        "with the range beside; 'one repeat decides' marks a verdict that leaving out any single "
        "repeat would flip. Pooled percentiles are shown for reference only.",
        "A phase's p99.9 rests on "
        + ", ".join(
            f"{round(st['duration_s'] * 1e6 / p['period_us'] * p['burst'])} {name} samples"
            for name, p in st["profiles"].items()
        )
        + " (one or two above it): read it with the per-repeat table.",
    ]
    if "thread=single" in vm["accel"]:
        notes.append(
            "Single-threaded TCG runs both vCPUs on ONE host thread, taking turns: while the "
            "batch vCPU is busy, the LC's vCPU runs at most part of the time whatever the "
            "guest's scheduler does, so even a perfect partition cannot reach `alone_pinned` "
            "(the other vCPU idle). `lc_cpu_us_per_request` measures that tax: the same work "
            "costs the LC more guest CPU time when the other vCPU is busy. docs/lab.md has why "
            "multi-threaded TCG is not used (the guest kernel oopses in text patching)."
        )
    notes.append(host_disturbance_note(report))
    dropped = report["enforcement"]["dropped"]
    if dropped:
        notes.append(f"scx_layered did not stay attached in: {', '.join(dropped)}.")
    return notes


def host_disturbance_note(report: dict[str, Any]) -> str:
    """How many phases the host disturbed (the guest measured them again), from the runs."""
    runs = report["runs"]
    metered = [r for r in runs if "host" in r]
    if not metered:
        return "The host's CPU use was not metered per phase in this run (before 2026-12-03)."
    again = [r for r in runs if r.get("disturbed_attempts")]
    attempts = sum(len(r["disturbed_attempts"]) for r in again)
    limit = report["facts"].get("disturbed_other_cpus")
    still = [r for r in metered if limit is not None and r["host"]["other_cpus"] > limit]
    worst = max(r["host"]["other_cpus"] for r in metered)
    return (
        f"The host's CPU use was metered per phase: {len(again)} of {len(runs)} phases were "
        f"measured again ({attempts} attempts in all, kept in the JSON) because the host ran "
        f"more than {limit} CPUs of other work beside the guest; {len(still)} stayed above it "
        f"after the last attempt; the worst kept phase had {worst} CPUs of other work."
    )


def render_markdown(report: dict[str, Any]) -> str:
    vm, st, facts = report["vm"], report["settings"], report["facts"]
    lines = [
        "# Interference benchmark: the critical pod's tail beside batch",
        "",
        f"Run {report['date']}. **Measured under QEMU TCG, not on hardware** (see caveats).",
        "",
        "## Setup",
        "",
        f"- Kernel `{report['kernel']}` (Debian, sched_ext), booted with "
        f"`{' '.join(vm.get('kernel_args') or ['(no extra arguments)'])}`; {vm['qemu']}, "
        f"`-accel {vm['accel']} -cpu {vm['cpu_model']}`, "
        f"`-smp {vm['cpus']},cores={vm['cores']},threads={vm['threads']}`, "
        f"{vm['memory_mb']} MB. Host: {vm['host_cpus']} cores, "
        f"{vm['host_other_cpus']} CPUs busy with other work on average during the run.",
        f"- Scheduler in `temper`: `{report['scheduler_ops']}` started by temper-agent from the "
        "pods' manifests (the shipped planner).",
        "- Simulated node (`temper_testing.lab.node.SimulatedNode`, systemd driver, "
        "kubelet weights):",
        "  - `lc`: Guaranteed, 1 CPU, `temper-critical`, running both LC profiles (one driven "
        "at a time), open loop, latency from each request's scheduled send time:",
        *[
            f"    - `{name}`: {p['workers']} worker(s), bursts of {p['burst']} every "
            f"{p['period_us']} us, ~{p['work_us']} us of work per request "
            f"({facts.get('iterations_per_request', {}).get(name)} loop iterations);"
            for name, p in st["profiles"].items()
        ],
        "  - `trainer` (`temper-low`, Burstable 500m) and `etl` (`temper-background`, Burstable "
        f"250m): {facts.get('batch_processes')} CPU-bound spinning processes in all (2x vCPUs).",
        f"- {st['repeats']} repeats x {len(st['scenarios'])} scenarios x {len(st['profiles'])} "
        f"profiles x {st['duration_s']:g} s, interleaved (order rotated each repeat), "
        f"{st['warmup_s']:g} s warm-up each. `alone_pinned`: the LC pinned to the CPU the "
        "critical layer held, nothing else running.",
        f"- Guest wall time {report['guest_wall_s']} s.",
    ]
    for name, p in report["profiles"].items():
        lines += _profile_section(name, p)
    lines += _partition_section(report)
    if report["experiments"]:
        lines += _experiments_section(report)
    lines += _counters_section(report)
    lines += _cross_cpu_section(report)
    lines += _raw_section(report)
    lines += ["", "## Caveats", "", *[f"- {note}" for note in report["caveats"]]]
    variants = "".join(
        f" --variant {shlex.quote(Variant(n, tuple((lay, f, v) for lay, f, v in changes)).spec)}"
        for n, changes in st.get("variants", {}).items()
    )
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        f"python bench/interference.py --repeats {st['repeats']} --duration-s "
        f"{st['duration_s']:g}{variants}",
        "```",
        "",
    ]
    return "\n".join(lines)


def _profile_section(name: str, p: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Profile `{name}`",
        "",
        "| target (temper vs base, per repeat) | limit | median (range) |",
        "|---|---:|---|",
    ]
    for target in TARGETS:
        v = p["verdicts"][target.name]
        limit = f"{'<' if target.strict else '<='} {target.limit:g}"
        lines.append(f"| `{target.name}` | {limit} | {verdict_text(v)} |")
    use = p["verdicts"]["batch_use_of_free_cpu_pct"]
    lines.append(
        f"| batch use of the CPU critical does not own, % | >= {use['limit']:g} | "
        f"{verdict_text(use) if use.get('median') is not None else 'not measured'} |"
    )
    lines += [
        "",
        "| scenario | pooled p50 us | p99 us | p99.9 us | max us | LC CPU us/request "
        "| batch iter/s | node CPU % | lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, f in p["scenarios"].items():
        lines.append(
            f"| {scenario} | {f['lc_p50_us']} | {f['lc_p99_us']} | {f['lc_p999_us']} | "
            f"{f['lc_max_us']} | {f['lc_cpu_us_per_request']} | {f['batch_ops_per_s']} | "
            f"{f['cpu_util_pct']} | {f['lost']} |"
        )
    return lines


def _experiments_section(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Experiments (`temper:NAME`: the planner's config with one change, scx_layered started"
        " directly, without the agent; or the agent with one flag changed, `agent.FLAG`)",
        "",
        "| experiment | change | profile | p99 / stock | p99.9 / stock | p99 / alone_pinned "
        "| batch % of free CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, per_profile in report["experiments"].items():
        changes = report["settings"]["variants"][name]
        change = ", ".join(f"{lay}.{f}={v}" for lay, f, v in changes) or "none (the baseline)"
        for profile, v in per_profile.items():
            lines.append(
                f"| {name} | `{change}` | {profile} | {verdict_text(v['p99_below_stock'])} | "
                f"{verdict_text(v['p999_below_stock'])} | "
                f"{verdict_text(v['p99_within_1.2x_alone_pinned'])} | "
                f"{verdict_text(v['batch_use_of_free_cpu_pct'])} |"
            )
    return lines + _agent_cost_lines(report)


def _agent_cost_lines(report: dict[str, Any]) -> list[str]:
    """`temper` over the agent-free `direct` experiment, when the run had one."""
    return _comparison_lines(
        "The agent's own cost to the critical pod: `temper` over `temper:direct` (the same config"
        " without the agent), median (range) of the per-repeat ratios, and in how many repeats"
        " the agent made it worse:",
        report.get("agent_cost") or {},
    )


def _partition_section(report: dict[str, Any]) -> list[str]:
    """`temper` over `partitioned`, the hard partition run in the same repeats."""
    lines = _comparison_lines(
        "`temper` over `partitioned` (the LC pinned to the critical CPU and batch to the rest, "
        "stock scheduler: kubelet's static CPU manager's shape), median (range) of the "
        "per-repeat ratios, and in how many repeats Temper was above it. A reference, not a "
        "target: what a hard partition reaches on this lab, where the other vCPU's work is "
        "emulated on the same host, bounds what any scheduler can do here.",
        report.get("against_partition") or {},
    )
    return ["", "## Temper against a hard partition", *lines] if lines else []


def _comparison_lines(intro: str, comparison: dict[str, Any]) -> list[str]:
    """A `verdict.compare` result per profile as a table under `intro`; [] when empty."""
    shown = {p: c for p, c in comparison.items() if c}
    if not shown:
        return []
    lines = ["", intro, "", "| profile | p99 | p99.9 | LC CPU per request |", "|---|---|---|---|"]
    for profile, metrics in shown.items():
        cells = [
            f"{m['median']:.2f} ({m['min']:.2f}-{m['max']:.2f}), above 1 in "
            f"{m['repeats_above_1']} of {len(m['per_repeat'])}"
            for m in (metrics[k] for k in AGENT_COST_METRICS)
        ]
        lines.append(f"| {profile} | " + " | ".join(cells) + " |")
    return lines


def _counters_section(report: dict[str, Any]) -> list[str]:
    counters = report.get("layer_counters") or {}
    if not counters:
        return []
    if not any(layers.get("critical", {}).get("total") for layers in counters.values()):
        return [
            "",
            "## scx_layered's counters",
            "",
            "No critical-layer event was counted: this run read the counters on a new connection "
            "to the stats socket, whose rates cover only the time since that connection's "
            "previous request, so the interval held little more than the read itself. Runs "
            "after 2026-12-03 hold one connection over each phase.",
        ]
    lines = [
        "",
        "## scx_layered's counters at each enforced phase's end (median over phases)",
        "",
        "Over each enforced phase (one stats connection held from the batch's start to the "
        "phase's end; scx_layered's `stats.rs`): `util` is CPU use in % of one CPU, `total` "
        "the count of scheduling events, the rest % of those events: `sel_local` woke onto an "
        "idle CPU and ran at once, `enq_wakeup` queued after a wake-up, `preempt` preempted "
        "another task, `preempt_fail` tried to and found none it could (a preempting layer "
        "does not preempt its own tasks), `enq_expire` queued again after its slice ran out, "
        "`keep_fail_busy` was not let run on past its slice because others waited.",
        "",
        f"| scenario | layer | CPUs | slice us | {' | '.join(SHOWN_COUNTERS)} |",
        "|---|---|---:|---:|" + "---:|" * len(SHOWN_COUNTERS),
    ]
    for scenario, layers in counters.items():
        for layer, c in layers.items():
            cells = " | ".join(f"{c.get(k, '')}" for k in SHOWN_COUNTERS)
            lines.append(
                f"| {scenario} | {layer} | {c.get('cur_nr_cpus', '')} | {c.get('slice_us', '')} "
                f"| {cells} |"
            )
    return lines


def _cross_cpu_section(report: dict[str, Any]) -> list[str]:
    rows = report.get("cross_cpu") or {}
    if not rows:
        return []
    cpus = sorted({k.split("_")[0] for row in rows.values() for k in row if k.startswith("cpu")})
    kinds = ("LOC", "RES", "CAL", "TLB", "device")
    lines = [
        "",
        "## What reaches across CPUs (median over phases)",
        "",
        "QEMU's threads that run no vCPU (main loop, devices, RCU) take host time beside the "
        "pinned vCPU threads: `emulator CPUs` is their mean use over a phase. Per guest CPU, "
        "interrupts per second: `LOC` local timer, `RES` reschedule IPIs, `CAL` function-call "
        "IPIs, `TLB` TLB shootdowns, `device` device interrupts (/proc/interrupts).",
        "",
        "| scenario | profile | emulator CPUs | "
        + " | ".join(f"{cpu} {kind}/s" for cpu in cpus for kind in kinds)
        + " |",
        "|---|---|---:|" + "---:|" * (len(cpus) * len(kinds)),
    ]
    for key, row in sorted(rows.items()):
        scenario, profile = key.split("/")
        cells = " | ".join(f"{row.get(f'{cpu}_{kind}', '')}" for cpu in cpus for kind in kinds)
        lines.append(f"| {scenario} | {profile} | {row.get('emulator_cpus', '')} | {cells} |")
    return lines


def _raw_section(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Raw figures per phase",
        "",
        "| repeat | scenario | profile | p50 us | p99 us | p99.9 us | LC CPU us/req "
        "| batch iter/s | node CPU % | lost | late sends | host other CPUs | measured again "
        "| attached whole phase |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["runs"]:
        held = r.get("enforced_whole_phase", "")
        host = r.get("host", {}).get("other_cpus", "")
        again = len(r.get("disturbed_attempts", []))
        lines.append(
            f"| {r['repeat']} | {r['scenario']} | {r['profile']} | {r['lc_p50_us']} | "
            f"{r['lc_p99_us']} | {r['lc_p999_us']} | {r['lc_cpu_us_per_request']} | "
            f"{r['batch_ops_per_s']} | {r['cpu_util_pct']} | {r['lost']} | {r['late_sends']} | "
            f"{host} | {again} | {held} |"
        )
    e = report["enforcement"]
    lines += [
        "",
        f"scx_layered stayed attached (same `enable_seq`, and 40 s after the batch started) in "
        f"{e['held']} of {e['phases']} enforced phases.",
    ]
    dmesg = report["facts"].get("dmesg_sched_ext") or []
    if dmesg:
        lines += ["", "Kernel sched_ext messages (guest dmesg):", "", "```", *dmesg, "```"]
    return lines


def doc_figures(report: dict[str, Any]) -> dict[str, str]:
    """Block name -> the text docs/lab.md quotes (`FIGURE_DOCS`), from the report."""
    return {FIGURES: lab_figures(report)}


def _layers_paragraph(report: dict[str, Any]) -> list[str]:
    """What scx_layered counted under `temper`, in a sentence (absent before the held
    connection, 2026-12-03)."""
    counters = report.get("layer_counters") or {}
    layers = counters.get("temper", {})
    critical, host = layers.get("critical", {}), layers.get("host", {})
    if not critical.get("total"):
        return []
    # Config experiments run scx_layered without the agent: their host layer is its absence.
    variants = report["settings"].get("variants", {})
    with_agent = {"temper"} | {
        f"temper:{name}"
        for name, changes in variants.items()
        if any(target == AGENT for target, _, _ in changes)
    }
    bare = sorted(
        layers_of.get("host", {}).get("util", 0.0)
        for scenario, layers_of in counters.items()
        if scenario not in with_agent
    )
    without = (
        f" Without the agent (the experiments below), the host layer used "
        f"{bare[0]:.1f}-{bare[-1]:.1f}%: the difference is the agent's own CPU, emulated."
        if bare
        else ""
    )
    return [
        "",
        f"scx_layered's counters under `temper` (median over phases): the critical layer used "
        f"{critical['util']:.1f}% of a CPU; of its scheduling events, {critical['sel_local']:.1f}% "
        f"woke onto its idle CPU and ran at once and {critical['enq_wakeup']:.1f}% queued after "
        f"a wake-up ({critical['preempt_fail']:.1f}% looked for a CPU to preempt and found "
        f"none: the critical CPU was running another of the pod's own tasks, which a critical "
        f"task does not preempt), {critical['preempt']:.1f}% preempted another task. "
        f"The host layer (the agent, scx_layered's own daemon, the harness) used "
        f"{host.get('util', 0.0):.1f}% of a CPU, on the CPU the batch pods share.{without}",
    ]


def lab_figures(report: dict[str, Any]) -> str:
    """The figures docs/lab.md quotes, rendered from the report so they cannot drift."""
    vm = report["vm"]
    lines = [
        f"From `bench/reports/interference.json` ({report['date']}, {vm['qemu'].split(' (')[0]}, "
        f"`{vm['accel']}`, {report['settings']['repeats']} repeats), median (range) of the "
        "per-repeat ratios of `temper` to each baseline:",
        "",
        "| profile | p99 / stock | p99 / stock_cpu_idle | p99.9 / stock | p99.9 / stock_cpu_idle "
        "| p99 / alone | p99 / alone_pinned | CPU per request / alone_pinned | batch % of free |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = (
        "p99_below_stock",
        "p99_below_stock_cpu_idle",
        "p999_below_stock",
        "p999_below_stock_cpu_idle",
        "p99_within_1.2x_alone",
        "p99_within_1.2x_alone_pinned",
        "cpu_per_request_within_1.1x_alone_pinned",
        "batch_use_of_free_cpu_pct",
    )
    for profile, p in report["profiles"].items():
        cells = [verdict_text(p["verdicts"][n]).replace("**", "") for n in names]
        lines.append(f"| {profile} | " + " | ".join(cells) + " |")
    lines += ["", "The LC pod's own CPU use and CPU time per request, mean over repeats:", ""]
    lines += ["| profile | scenario | LC pod CPUs | LC CPU us per request |", "|---|---|---:|---:|"]
    for profile, p in report["profiles"].items():
        for scenario in ("alone", "alone_pinned", "stock", "temper"):
            f = p["scenarios"].get(scenario)
            if f:
                lines.append(
                    f"| {profile} | {scenario} | {f['pod_cpus'].get('lc')} | "
                    f"{f['lc_cpu_us_per_request']} |"
                )
    lines += _comparison_lines(
        "`temper` against the hard partition (`partitioned`, a reference, not a target), "
        "median (range) of the per-repeat ratios:",
        report.get("against_partition") or {},
    )
    lines += _layers_paragraph(report)
    lines += ["", host_disturbance_note(report)]
    e = report["enforcement"]
    lines += [
        "",
        f"Enforcement held: scx_layered stayed attached (same `enable_seq`, and 40 s after the "
        f"batch started) in {e['held']} of {e['phases']} enforced phases, the variants' included.",
    ]
    if report["experiments"]:
        lines += [
            "",
            "Experiments in the same run, each the planner's config with one change, on"
            " scx_layered started directly (no agent beside it, unlike `temper`), or the agent"
            " with one flag changed (`agent.FLAG`):",
            "",
        ]
        lines += _experiments_section(report)[3:]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
