"""CPU limits: what a pod with a CPU limit and more runnable threads than it gets, stock vs Temper.

Boots the lab's sched_ext kernel (2 vCPUs, the lab's TCG mode: docs/lab.md) and runs
`python -m temper_testing.lab.cpulimit` there (see its docstring).

    python bench/cpu_limit.py [--repeats N] [--duration-s S] [--scx-layered PATH] [--out DIR]
                              [--render-only]

Writes DIR/cpu-limit.json and DIR/cpu-limit.md and prints the JSON's path last. The figures
docs/ quote come from the committed report through `doc_figures` (each in a block named in
`FIGURE_DOCS`); `--render-only` rewrites the markdown and those blocks from an existing JSON
without booting a guest.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from temper_testing.lab.guestjob import (
    CPUS,
    pinned_scx_layered,
    run_module,
    tcg_mode,
    write_doc_block,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "bench" / "reports"
RENDER = "python bench/cpu_limit.py --render-only"
# The blocks doc_figures() fills, and the docs that hold each (tests/unit/test_doc_figures.py).
FIGURE_DOCS = {"cpu-limit-figures": ("docs/lab.md", "docs/planning.md", "docs/scx-layered.md")}


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


def doc_figures(report: dict[str, Any]) -> dict[str, str]:
    """The figures docs/ quote, rendered from the report so they cannot drift: block name -> its
    text (`FIGURE_DOCS` says which docs hold it)."""
    guest = report["guest"]
    used, ratio = guest["mean_cpus_used"], guest["ratio_to_limit"]
    repeats = len({r["repeat"] for r in guest["runs"]})
    text = (
        f"Measured in the lab (QEMU TCG, {guest['node_cpus']} vCPUs): a Burstable pod limited to "
        f"{guest['pod']['limit_millis']}m, running {guest['spinning_processes']} CPU-bound "
        f"processes, used {used['stock']} CPUs under the stock scheduler ({ratio['stock']}x its "
        f"limit) and {used['temper']} CPUs under Temper ({ratio['temper']}x), the mean of "
        f"{repeats} repeats (bench/reports/cpu-limit.md)."
    )
    return {
        "cpu-limit-figures": textwrap.fill(
            text, width=100, break_long_words=False, break_on_hyphens=False
        )
    }


def publish(out: Path, report: dict[str, Any]) -> None:
    """Write the report; when it is the committed one, the blocks the docs quote too."""
    write_report(out, "cpu-limit", report, render_markdown(report))
    if out.resolve() != REPORTS:
        return
    try:
        texts = doc_figures(report)
    except (LookupError, ValueError) as exc:  # a run that stopped early: the docs keep theirs
        print(
            f"cpu_limit: the docs keep their figures, this report lacks some ({exc!r})",
            file=sys.stderr,
        )
        return
    for block, text in texts.items():
        for doc in FIGURE_DOCS[block]:
            write_doc_block(block, RENDER, text, REPO / doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--scx-layered", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite DIR/cpu-limit.md, and the figures the docs quote, from DIR/cpu-limit.json",
    )
    args = parser.parse_args()
    if args.render_only:
        publish(args.out, json.loads((args.out / "cpu-limit.json").read_text()))
        return 0
    scx = args.scx_layered or pinned_scx_layered()
    if not scx.is_file():
        parser.error(f"{scx}: no scx_layered there (make scx-layered builds it)")
    job = run_module(
        "temper_testing.lab.cpulimit",
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
    publish(args.out, report)
    return 0 if job.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
