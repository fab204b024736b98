"""CPU limits: what a pod with a CPU limit and more runnable threads than it gets, stock vs Temper.

Boots the lab's sched_ext kernel (2 vCPUs, the lab's TCG mode: docs/lab.md) and runs
`python -m temper.lab.cpulimit` there (see its docstring).

    python bench/cpu_limit.py [--repeats N] [--duration-s S] [--scx-layered PATH] [--out DIR]

Writes DIR/cpu-limit.json and DIR/cpu-limit.md and prints the JSON's path last.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from temper.lab.guestjob import (
    CPUS,
    REPO,
    pinned_scx_layered,
    run_module,
    tcg_mode,
    write_report,
)


def render_markdown(report: dict[str, Any]) -> str:
    guest = report["guest"]
    pod = guest["pod"]
    limit = pod["limit_millis"] / 1000
    lines = [
        "# CPU limits under stock and under Temper",
        "",
        f"Run {report['date']}. **Measured under QEMU TCG, not on hardware.**",
        "",
        "## Setup",
        "",
        f"- Kernel `{report['kernel']}`, {CPUS} vCPUs (no SMT), {tcg_mode(report.get('vm', {}))}.",
        f"- Pod `capped`: Burstable, request {pod['request_millis']}m, limit "
        f"{pod['limit_millis']}m (pod cgroup `cpu.max` = `{pod['cpu_max']}`), tier normal by its "
        f"QoS class, running {guest['spinning_processes']} CPU-bound processes; beside it an "
        "idle critical pod. `stock`: no sched_ext scheduler; `temper`: temper-agent enforcing.",
        "- Per phase: the pod cgroup's `cpu.stat` before and after (usage over wall time; CFS "
        "throttling).",
        "",
        "## Results",
        "",
        f"| scenario | mean CPUs used | x its limit ({limit:g} CPU) |",
        "|---|---:|---:|",
    ]
    for name, used in guest["mean_cpus_used"].items():
        lines.append(f"| {name} | {used} | {guest['ratio_to_limit'][name]} |")
    lines += [
        "",
        "| repeat | scenario | CPUs used | throttled periods | throttled ms | enforced whole "
        "phase |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for r in guest["runs"]:
        lines.append(
            f"| {r['repeat']} | {r['scenario']} | {r['cpus_used']} | {r['throttled_periods']} | "
            f"{r['throttled_ms']} | {r.get('enforced_whole_phase', '')} |"
        )
    lines += ["", "## Reading", ""]
    lines += [f"- {note}" for note in report["notes"]]
    lines += ["", "## Reproduce", "", "```", "python bench/cpu_limit.py", "```", ""]
    return "\n".join(lines)


def notes(guest: dict[str, Any]) -> list[str]:
    used = guest["mean_cpus_used"]
    ratio = guest["ratio_to_limit"]
    return [
        f"Under `stock` CFS bandwidth control held the pod at {used['stock']} CPUs "
        f"({ratio['stock']}x its limit). Under `temper` it used {used['temper']} CPUs "
        f"({ratio['temper']}x): a CPU limit is not a ceiling while scx_layered schedules, since "
        "sched_ext does not run CFS bandwidth control and scx_layered has no equivalent.",
        "Nothing in Temper's config bounds one pod: a Grouped layer's `cpus_range` (the "
        "planner caps normal's at the cores its pods' limits add up to, 1 here) bounds the CPUs "
        "the layer owns, not where its tasks run, and idle CPUs serve every layer. The planned "
        "answer is visibility: the observation issue's linter rule for a pod with a CPU limit "
        "on an enforcing node (not built yet). A per-pod ceiling would need scx_layered support.",
        "TCG: both vCPUs share one host core, so CPU figures are guest CPU time, not host time.",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--scx-layered", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "reports")
    args = parser.parse_args()
    scx = args.scx_layered or pinned_scx_layered()
    if not scx.is_file():
        parser.error(f"{scx}: no scx_layered there (make scx-layered builds it)")
    job = run_module(
        "temper.lab.cpulimit",
        [f"--scx-layered={scx}", f"--repeats={args.repeats}", f"--duration-s={args.duration_s}"],
        timeout_s=600 + 300 * args.repeats,
    )
    if not job.report:
        print(f"the guest wrote no report (exit {job.returncode})", file=sys.stderr)
        return 1
    report = {
        "benchmark": "cpu-limit",
        "date": time.strftime("%Y-%m-%d"),
        "kernel": job.kernel,
        "vm": job.vm,
        "guest": job.report,
        "notes": notes(job.report),
        "guest_exit": job.returncode,
        "guest_wall_s": round(job.wall_s, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, "cpu-limit", report, render_markdown(report))
    return 0 if job.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
