"""Observation's CPU cost, on the host and in the lab guest: the 0.13%-of-a-core budget.

    python bench/observe_overhead.py [--where host,lab] [--duration-s 300] [--repeats 1]
                                     [--scx-layered PATH] [--out DIR] [--render-only]

Runs `python -m temper_testing.lab.overhead` (see its docstring: 1,000 threads in 50 pods, the agent
with observation on and off, /metrics scraped every 15 s) on this machine's kernel, where the
agent refuses sched_ext and observes, and in the lab guest (2 vCPUs, TCG), where it enforces.
Writes DIR/observe-overhead.json and DIR/observe-overhead.md; prints the JSON's path last. The
figures README.md and docs/ quote come from the committed report's host place through
`doc_figures` (each in a block named in `FIGURE_DOCS`); `--render-only` rewrites the markdown
and those blocks from an existing JSON without measuring.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from temper.agent.observer import ObserveSettings
from temper_testing.lab.guestjob import (
    pinned_scx_layered,
    run_module,
    tcg_mode,
    write_doc_block,
    write_report,
)
from temper_testing.lab.observe import find_cgroup2_root, host_root_view

REPO = Path(__file__).resolve().parents[1]
TARGET_PCT = 0.13  # docs/performance.md#observation-budget
GUEST_MEMORY_MB = 4096  # 100 Python processes (50 containers, 50 sandboxes)
REPORTS = REPO / "bench" / "reports"
RENDER = "python bench/observe_overhead.py --render-only"
# The blocks doc_figures() fills, and the docs that hold each (tests/unit/test_doc_figures.py).
FIGURE_DOCS = {
    "observe-overhead-figures": ("README.md", "docs/observe.md", "docs/performance.md"),
    "observe-overhead-read-cost": ("docs/observe.md", "docs/performance.md"),
    "observe-overhead-budget": ("docs/performance.md",),
}


def run_host(args: argparse.Namespace) -> dict[str, Any]:
    cgroups = find_cgroup2_root()
    if cgroups is None:
        raise SystemExit("observe_overhead: needs root and a writable cgroup2 mount")
    with tempfile.TemporaryDirectory(prefix="temper-overhead") as tmp:
        work = Path(tmp)
        out = work / "host.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "temper_testing.lab.overhead",
                *("--out", str(out), "--work", str(work / "work")),
                *("--scx-layered", str(args.scx_layered)),
                *("--host-root", str(host_root_view(work, cgroups))),
                *("--cgroup-root", str(cgroups)),
                *("--duration-s", str(args.duration_s), "--repeats", str(args.repeats)),
            ],
            check=True,
        )
        report: dict[str, Any] = json.loads(out.read_text())
    report["where"] = "host (no sched_ext: the agent refuses and observes)"
    return report


def run_lab(args: argparse.Namespace) -> dict[str, Any]:
    arguments = [
        *("--work", "/tmp/overhead", "--scx-layered", str(args.scx_layered)),
        *("--duration-s", str(args.duration_s), "--repeats", str(args.repeats)),
    ]
    timeout = 1200 + 2 * args.repeats * (args.duration_s + 300)
    job = run_module("temper_testing.lab.overhead", arguments, timeout, memory_mb=GUEST_MEMORY_MB)
    if not job.report:
        raise SystemExit(f"observe_overhead: the guest wrote no report (exit {job.returncode})")
    report = dict(job.report)
    report["where"] = "lab guest (QEMU TCG, 2 vCPUs, the agent enforcing with scx_layered)"
    report["guest_wall_s"] = round(job.wall_s, 1)
    report["vm"] = job.vm
    return report


def lab_vm(places: list[dict[str, Any]]) -> dict[str, Any]:
    """How the lab place's guest ran ({} when the lab was not measured)."""
    return next((p["vm"] for p in places if "vm" in p), {})


def reading(places: list[dict[str, Any]]) -> list[str]:
    """What the figures say, computed from them: the share of observation, of reads in it."""
    lines = []
    for place in places:
        on = [r for r in place["runs"] if r["observe"] == "on"]
        reads_per_s = sum(r["samples_per_s"] for r in on) / len(on)
        reads_pct = reads_per_s * place["read_cost_us"]["kept_open"] / 1e4
        share = place["observation_cpu_pct_of_one_core"]
        lines += [
            f"- **{place['name']}**: the agent used {place['cpu_pct_of_one_core']}% of one core "
            f"with observation, {round(place['cpu_pct_of_one_core'] / TARGET_PCT, 1)}x the "
            f"{TARGET_PCT}% target; {place['baseline_cpu_pct_of_one_core']}% without it. "
            f"Observation's own share is {share}%. Of that, {reads_per_s:.0f} thread reads a "
            f"second at {place['read_cost_us']['kept_open']} us each account for "
            f"{reads_pct:.3f}%; the rest ({max(0.0, share - reads_pct):.3f}%) is finding "
            "threads every 10 s, PSI, the linter, the per-round sampling plan over every "
            "thread, and building snapshots for scrapes.",
        ]
    first = places[0]
    reads = next(r["samples_per_s"] for r in first["runs"] if r["observe"] == "on")
    kept, closed = first["read_cost_us"]["kept_open"], first["read_cost_us"]["open_read_close"]
    return [
        *lines,
        "",
        f"Why Python on /proc misses 0.13% at these rates ({first['name']}): one thread read "
        f"costs {kept} us (two `pread`s of files the kernel formats as text on every read, and "
        f"the parsing); kept-open descriptors already save {closed - kept:.1f} us of "
        f"{closed} us. At {reads:.0f} reads a second that alone is {reads * kept / 1e4:.3f}% of "
        "a core, most of the budget before finding threads, PSI or the linter run.",
        "",
        "The design that can: one BPF task iterator (`iter/task`, kernel >= 5.8, present "
        "on every sched_ext kernel) that walks only the tasks of the node's pod cgroups and "
        "writes (tid, cgroup id, CPU, state, `se.sum_exec_runtime`, `sched_info.run_delay`) "
        "as fixed binary records; the agent reads the whole node in one `read()` per round, "
        "with no text formatting or parsing per thread (the task_diag measurement in "
        "docs/performance.md#procfs-opening-costs-more-than-reading: ~1 us per task, against "
        "~9 us for /proc). Thread discovery then comes from the same walk, which removes the "
        "10 s discovery too. Until then, `--sample-budget-per-s` bounds the cost: at 60 reads/s "
        "observation's reads stay near 0.06%.",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "# What always-on observation costs",
        "",
        f"Run {report['date']}. Target: at most {TARGET_PCT}% of one core "
        "(docs/performance.md#observation-budget). The lab guest's figures are **measured under "
        "QEMU TCG**, where every instruction costs several times what it costs on hardware.",
        "",
        "## Setup",
        "",
        "- 50 pods in all five tiers (5 critical, 10 high, 15 normal, 10 low, 10 background), 20 "
        "threads each (18 named threads and the main thread of the container process, the "
        "sandbox's pause); every thread wakes once a second. "
        "`python -m temper_testing.lab.overhead`.",
        f"- Rates (agent defaults): critical threads every {settings['critical_interval_s']:g} s, "
        f"others at least every {settings['other_interval_s']:g} s, at most "
        f"{settings['budget_per_s']:g} reads/s; threads found again every "
        f"{settings['discover_interval_s']:g} s; PSI, and scx_layered statistics while enforcing, "
        f"every {settings['psi_interval_s']:g} s; linter every {settings['lint_interval_s']:g} "
        "s; `/metrics` scraped every 15 s.",
        "- The agent's CPU: utime + stime of all its threads from `/proc/<pid>/stat`, over the "
        "window after a 30 s warm-up. Baseline: the same agent, same pods, with `--observe off` "
        "(it still plans, reconciles and serves the scrapes).",
        "",
        "## Results",
        "",
        "| where | observation | mode | window s | agent CPU s | % of one core | reads/s | "
        "deferred/s | scrapes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for place in report["places"]:
        for run in place["runs"]:
            lines.append(
                f"| {place['name']} | {run['observe']} | {run['mode']} | {run['wall_s']} | "
                f"{run['cpu_s']} | {run['cpu_pct_of_one_core']} | {run['samples_per_s']} | "
                f"{run['deferred_per_s']} | {run['scrapes']} |"
            )
    lines += [
        "",
        "| where | threads | agent, observation on | baseline (off) | observation's share "
        "| x target | one read (kept open) | one read (open/close) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for place in report["places"]:
        cost = place["read_cost_us"]
        lines.append(
            f"| {place['name']} | {place['threads']} | {place['cpu_pct_of_one_core']}% | "
            f"{place['baseline_cpu_pct_of_one_core']}% | "
            f"{place['observation_cpu_pct_of_one_core']}% | "
            f"{round(place['cpu_pct_of_one_core'] / TARGET_PCT, 2)} | "
            f"{cost['kept_open']} us | {cost['open_read_close']} us |"
        )
    lines += ["", "## Reading the figures", "", *report["reading"], ""]
    lines += ["## Caveats", "", *(f"- {c}" for c in report["caveats"]), ""]
    return "\n".join(lines)


def doc_figures(report: dict[str, Any]) -> dict[str, str]:
    """The figures README.md and docs/ quote, from the host place (the development VM), rendered
    from the report so they cannot drift: block name -> its text (`FIGURE_DOCS` says which docs
    hold it)."""
    host = next((p for p in report["places"] if p["name"] == "host"), None)
    if host is None:
        raise KeyError("a host place")
    target = report["target_pct_of_one_core"]
    share = host["observation_cpu_pct_of_one_core"]
    kept, closed = host["read_cost_us"]["kept_open"], host["read_cost_us"]["open_read_close"]
    budget_us = target / 100 * 1e6  # CPU time per second of wall time
    texts = {
        "observe-overhead-figures": "Observation's CPU cost is measured, not assumed: on the "
        f"development VM the agent used {host['cpu_pct_of_one_core']:.2f}% of one core with "
        f"observation and {host['baseline_cpu_pct_of_one_core']:.2f}% without, so observation's "
        f"own share is {share:.2f}%, {share / target:.1f} times the {target:g}% target "
        "(bench/reports/observe-overhead.md, which also says why Python on `/proc` misses the "
        "target and what would meet it).",
        "observe-overhead-read-cost": f"On the development VM one thread's `stat` and "
        f"`schedstat`, read with `pread` on kept descriptors, cost {kept:.1f} µs in Python, "
        f"against {closed:.1f} µs for open, read and close (bench/reports/observe-overhead.md).",
        "observe-overhead-budget": "What the budget buys: a thread read from `/proc` in Python "
        f"costs {kept:.1f} µs with kept-open files (below), so {budget_us / 1000:g} ms a second "
        f"pays for about {round(budget_us / kept, -1):.0f} reads before anything else runs "
        "(bench/reports/observe-overhead.md).",
    }
    return {
        name: textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)
        for name, text in texts.items()
    }


def publish(out: Path, report: dict[str, Any]) -> None:
    """Write the report; when it is the committed one, the blocks the docs quote too."""
    write_report(out, "observe-overhead", report, render_markdown(report))
    if out.resolve() != REPORTS:
        return
    try:
        texts = doc_figures(report)
    except (LookupError, ValueError) as exc:  # a run that stopped early: the docs keep theirs
        print(
            f"observe_overhead: the docs keep their figures, this report lacks some ({exc!r})",
            file=sys.stderr,
        )
        return
    for block, text in texts.items():
        for doc in FIGURE_DOCS[block]:
            write_doc_block(block, RENDER, text, REPO / doc)


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/observe_overhead.py")
    parser.add_argument("--where", default="host,lab")
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--scx-layered", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the places of the existing report that this run does not measure",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite DIR/observe-overhead.md, and the figures the docs quote, from its JSON",
    )
    args = parser.parse_args()
    if args.render_only:
        publish(args.out, json.loads((args.out / "observe-overhead.json").read_text()))
        return 0
    args.scx_layered = args.scx_layered or pinned_scx_layered()
    places = []
    failed = []
    for where in args.where.split(","):
        print(f"observe_overhead: {where}", file=sys.stderr, flush=True)
        try:
            place = run_host(args) if where == "host" else run_lab(args)
        except (SystemExit, subprocess.CalledProcessError, OSError) as exc:
            failed.append(f"{where}: {exc}")  # keep what the other place measured
            continue
        place["name"] = where
        places.append(place)
    if args.keep and (args.out / "observe-overhead.json").exists():
        earlier = json.loads((args.out / "observe-overhead.json").read_text())
        measured = {p["name"] for p in places}
        kept = [p for p in earlier["places"] if p["name"] not in measured]
        failed += [f"{p['name']}: kept from the report of {earlier['date']}" for p in kept]
        places = kept + places
    if not places:
        raise SystemExit(f"observe_overhead: nothing measured ({'; '.join(failed)})")
    defaults = ObserveSettings()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "target_pct_of_one_core": TARGET_PCT,
        "settings": {
            "budget_per_s": defaults.sampling.budget_per_s,
            "critical_interval_s": defaults.sampling.critical_interval_s,
            "other_interval_s": defaults.sampling.other_interval_s,
            "discover_interval_s": defaults.discover_interval_s,
            "psi_interval_s": defaults.psi_interval_s,
            "lint_interval_s": defaults.lint_interval_s,
            "scrape_interval_s": 15.0,
        },
        "places": places,
        # The headline fields the issue asks for, from the first place measured.
        **{
            key: places[0][key]
            for key in ("cpu_pct_of_one_core", "threads", "pods", "duration_s", "where")
        },
        "reading": reading(places),
        "failed": failed,
        "caveats": [
            *(f"Not measured in this run: {f}" for f in failed),
            "One run per setting unless --repeats says otherwise; the host is a 2-core VM "
            "shared with the workload's 1,000 threads (1,000 wakeups a second).",
            f"The lab guest runs under {tcg_mode(lab_vm(places))}: its CPU figures are inflated by "
            "emulation and are not hardware figures. One thread read costs ~65x the host's "
            "there, and a round takes longer than its second, so the guest made fewer reads "
            "than asked (deferred/s). Compare the guest with itself (on against off), not with "
            "the target.",
            "The lab guest's agent enforces (scx_layered loaded, its statistics read every 2 s); "
            "the host's refuses sched_ext, so its figures leave out the stats socket.",
        ],
    }
    publish(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
