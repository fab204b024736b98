"""Lab costs benchmark: what the emulator charges for a context switch and a cross-CPU wake-up.

Runs `python -m temper_testing.lab.costs` (its docstring has the ping-pong and placements) on this
host and in the lab guest in each of `GUESTS`: the lab's CPU model as functional tests boot it, the
same as benchmarks boot it (`MEASURE_KERNEL_ARGS`: idle=poll), and `qemu64`, the model an earlier
probe suspected. Compares the placements' costs.

    python bench/lab_costs.py [--rounds 3] [--trips 2000] [--out DIR]
    python bench/lab_costs.py --render-only    # the .md and docs/lab.md's block from the JSON

Writes DIR/lab-costs.{json,md} and prints the JSON's path last; into the committed reports it
also rewrites docs/lab.md's figures block. About 3 minutes a guest on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from temper_testing.lab.costs import PLACEMENTS
from temper_testing.lab.errors import LabError
from temper_testing.lab.guestjob import (
    MEASURE_KERNEL_ARGS,
    lab_accel,
    run_module,
    write_doc_block,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "bench" / "reports"
FIGURES = "lab-costs-figures"  # the docs/lab.md block lab_figures() fills
RENDER = "python bench/lab_costs.py --render-only"
FIGURE_DOCS = {FIGURES: ("docs/lab.md",)}  # tests/unit/test_doc_figures.py keeps them equal
GUESTS = {  # name: (QEMU CPU model, guest kernel arguments)
    "max": ("max", ()),
    "max idle=poll": ("max", MEASURE_KERNEL_ARGS),
    "qemu64": ("qemu64", ()),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trips", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite DIR/lab-costs.md and docs/lab.md's figures from DIR/lab-costs.json",
    )
    args = parser.parse_args()
    if args.render_only:
        publish(args.out, json.loads((args.out / "lab-costs.json").read_text()))
        return 0
    job = ["--rounds", str(args.rounds), "--trips", str(args.trips)]
    print("lab-costs: on the host", file=sys.stderr, flush=True)
    runs: dict[str, dict[str, Any]] = {"host": {"figures": on_host(job)}}
    for name, (model, kernel_args) in GUESTS.items():
        print(f"lab-costs: in the guest, {name}", file=sys.stderr, flush=True)
        try:
            guest = run_module(
                "temper_testing.lab.costs",
                job,
                timeout_s=1800,
                accel=lab_accel(model),
                kernel_args=kernel_args,
            )
        except LabError as exc:
            print(f"lab-costs: {name}: {exc}", file=sys.stderr)
            return 1
        if not guest.report:
            print(f"lab-costs: {name}: the guest wrote no figures", file=sys.stderr)
            return 1
        runs[name] = {"figures": guest.report, "vm": guest.vm}
    publish(args.out, build_report(runs, args.rounds, args.trips))
    return 0


def on_host(job: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="temper-costs") as tmp:
        out = Path(tmp) / "costs.json"
        argv = [sys.executable, "-m", "temper_testing.lab.costs", *job, "--out", str(out)]
        subprocess.run(argv, check=True, cwd=REPO, stdout=sys.stderr)
        figures: dict[str, Any] = json.loads(out.read_text())
        return figures


def build_report(runs: dict[str, dict[str, Any]], rounds: int, trips: int) -> dict[str, Any]:
    medians = {
        where: {p: statistics.median(run["figures"]["us_per_round_trip"][p]) for p in PLACEMENTS}
        for where, run in runs.items()
    }
    return {
        "benchmark": "lab-costs",
        "date": time.strftime("%Y-%m-%d"),
        "rounds": rounds,
        "trips": trips,
        "median_us_per_round_trip": medians,
        "cross_cpu_over_same_cpu": {
            where: round(m["two_cpu_processes"] / m["same_cpu_processes"], 2)
            for where, m in medians.items()
        },
        "runs": runs,
    }


def publish(out: Path, report: dict[str, Any]) -> None:
    """Write the report; when it is the committed one, docs/lab.md's figures block too."""
    write_report(out, "lab-costs", report, render_markdown(report))
    if out.resolve() == REPORTS:
        write_doc_block(FIGURES, RENDER, lab_figures(report), REPO / "docs" / "lab.md")


def _where(where: str, report: dict[str, Any]) -> str:
    if where == "host":
        return "this host (a VM on hardware virtualization)"
    vm = report["runs"][where]["vm"]
    args = " ".join(vm["kernel_args"]) or "no extra kernel arguments"
    return f"guest, `-cpu {vm['cpu_model']}`, {args}"


def doc_figures(report: dict[str, Any]) -> dict[str, str]:
    """Block name -> the text docs/lab.md quotes (`FIGURE_DOCS`), from the report."""
    return {FIGURES: lab_figures(report)}


def lab_figures(report: dict[str, Any]) -> str:
    """The costs as docs/lab.md quotes them, rendered from the report."""
    lines = [
        f"From `bench/reports/lab-costs.json` ({report['date']}; median of {report['rounds']} "
        f"rounds of {report['trips']} round trips), microseconds per round trip:",
        "",
        f"| where | {' | '.join(p.replace('_', ' ') for p in PLACEMENTS)} | two CPUs / one CPU |",
        "|---|" + "---:|" * (len(PLACEMENTS) + 1),
    ]
    for where, m in report["median_us_per_round_trip"].items():
        cells = " | ".join(f"{m[p]:g}" for p in PLACEMENTS)
        ratio = report["cross_cpu_over_same_cpu"][where]
        lines.append(f"| {_where(where, report)} | {cells} | {ratio:g}x |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    guests = [w for w in report["runs"] if w != "host"]
    vm = report["runs"][guests[0]]["vm"] if guests else {}
    lines = [
        "# Lab costs: a context switch and a cross-CPU wake-up, on the host and under TCG",
        "",
        f"Run {report['date']}. Guest figures are **measured under QEMU TCG**.",
        "",
        "## Setup",
        "",
        "- `python -m temper_testing.lab.costs`: a ping-pong over a UNIX seqpacket socket pair "
        "between two processes or two threads, each end pinned (`sched_setaffinity`) to the same "
        "CPU or to CPUs 1 and 0; placements interleaved in each round.",
        f"- Guest: {vm.get('qemu', '-')}, {vm.get('cpus', '-')} vCPUs, vCPU threads pinned "
        f"{vm.get('vcpu_pins', '-')}; host {vm.get('host_cpus', '-')} cores.",
        "",
        "## Figures",
        "",
        lab_figures(report),
        "",
        "## Raw figures (us per round trip, every round)",
        "",
        "| where | placement | rounds |",
        "|---|---|---|",
    ]
    for where, run in report["runs"].items():
        for p in PLACEMENTS:
            rounds = ", ".join(f"{v:g}" for v in run["figures"]["us_per_round_trip"][p])
            lines.append(f"| {where} | {p} | {rounds} |")
    lines += ["", "## Caveats", ""]
    for where in guests:
        g = report["runs"][where]["vm"]
        lines.append(
            f"- {where}: host {g['host_busy_cpus']} CPUs busy on average, "
            f"{g['host_qemu_cpus']} of them QEMU's, {g['host_other_cpus']} anything else "
            f"({g.get('host_steal_cpus')} stolen by the hypervisor)."
        )
    lines += [
        "- Python's own cost per trip is in every figure alike; the ratios between placements "
        "are what carries over.",
        "",
        "## Reproduce",
        "",
        "```",
        f"python bench/lab_costs.py --rounds {report['rounds']} --trips {report['trips']}",
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
