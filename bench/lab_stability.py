"""The lab's stability proof: many boots, each enabling and disabling scx_layered under load.

Boots the lab guest (the provisioned QEMU, as every lab run: docs/lab.md) `--boots` times; each
boot runs `python -m temper_testing.lab.stability` (`--cycles` enable/disable cycles of the real
scx_layered beside a busy kernel) and reports every kernel log line naming an oops, a BUG, a
warning or a panic. A guest that dies without reporting is a failure, with its console's
trouble lines.

    python bench/lab_stability.py [--boots 50] [--cycles 1] [--out DIR]
    python bench/lab_stability.py --storm 4000 --boots 2 [--host-qemu] [--cpu qemu64] --out DIR
    python bench/lab_stability.py --render-only    # the .md and docs/lab.md's block from the JSON

`--storm N` boots the reproducer instead (N flips of one static key, no scx_layered);
`--host-qemu` runs the host release's own QEMU, multi-threaded, as the lab once tried.

Writes DIR/lab-stability.json and .md and prints the JSON's path last; exits 1 unless every
boot and cycle was clean. About 40 s a boot on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from temper_testing.lab.errors import LabError
from temper_testing.lab.guestjob import (
    lab_accel,
    pinned_scx_layered,
    run_module,
    write_doc_block,
    write_report,
)
from temper_testing.lab.provision import lab_cache
from temper_testing.lab.qemu import Accel
from temper_testing.lab.stability import kernel_trouble

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "bench" / "reports"
FIGURES = "lab-stability-figures"  # the docs/lab.md block lab_figures() fills
RENDER = "python bench/lab_stability.py --render-only"
FIGURE_DOCS = {FIGURES: ("docs/lab.md",)}  # tests/unit/test_doc_figures.py keeps them equal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument("--storm", type=int, default=0, help="N static-key flips per boot")
    parser.add_argument("--host-qemu", action="store_true", help="the host's QEMU, not the lab's")
    parser.add_argument("--cpu", help="QEMU CPU model (default: the lab's)")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite DIR/lab-stability.md and docs/lab.md's figures from DIR/lab-stability.json",
    )
    args = parser.parse_args()
    if args.render_only:
        report = json.loads((args.out / "lab-stability.json").read_text())
        publish(args.out, "lab-stability", report)
        return 0
    accel = lab_accel(args.cpu) if args.cpu else None
    if args.host_qemu:
        accel = Accel("multi", args.cpu or "max")
    job_args = [f"--storm={args.storm}"] if args.storm else []
    if not args.storm:
        job_args = [f"--scx-layered={pinned_scx_layered()}", f"--cycles={args.cycles}"]
    boots: list[dict[str, Any]] = []
    vm: dict[str, Any] = {}
    started = time.monotonic()
    cycles = 0 if args.storm else args.cycles
    # A long proof cut short keeps what it saw: the boots so far, rewritten after each one.
    partial = lab_cache() / "lab-stability-partial.json"
    print(f"stability: the boots so far go to {partial}", file=sys.stderr)
    for n in range(args.boots):
        try:
            job = run_module(
                "temper_testing.lab.stability",
                job_args,
                timeout_s=600 + 300 * args.cycles,
                accel=accel,
                emulator_retries=0,  # a boot the emulator kills is what this proof counts
            )
        except LabError as exc:
            boots.append({"boot": n, "crashed": True, "kernel_trouble": kernel_trouble(str(exc))})
        else:
            vm = job.vm
            boots.append({"boot": n, "crashed": False, "exit": job.returncode, **job.report})
        print(f"stability: boot {n + 1}/{args.boots}: {summary_line(boots[-1])}", file=sys.stderr)
        so_far = build_report(boots, vm, cycles, round(time.monotonic() - started))
        partial.write_text(json.dumps(so_far, indent=1) + "\n")
    report = build_report(boots, vm, cycles, round(time.monotonic() - started))
    report["storm_toggles_per_boot"] = args.storm
    stem = "lab-stability-storm" if args.storm else "lab-stability"
    publish(args.out, stem, report)
    return 0 if report["clean"] else 1


def publish(out: Path, stem: str, report: dict[str, Any]) -> None:
    """Write the report; when it is the committed proof, docs/lab.md's figures block too."""
    write_report(out, stem, report, render_markdown(report))
    if out.resolve() == REPORTS and stem == "lab-stability":
        write_doc_block(FIGURES, RENDER, lab_figures(report), REPO / "docs" / "lab.md")


def summary_line(boot: dict[str, Any]) -> str:
    if boot["crashed"]:
        return "CRASHED " + "; ".join(boot["kernel_trouble"][:2])
    cycles = boot.get("cycles", [])
    attached = sum(c["attached"] for c in cycles)
    trouble = len(boot.get("kernel_trouble", []))
    return f"{attached}/{len(cycles)} enables, {trouble} kernel trouble lines"


def build_report(
    boots: list[dict[str, Any]], vm: dict[str, Any], cycles: int, wall_s: int
) -> dict[str, Any]:
    cycles_run = [c for b in boots for c in b.get("cycles", [])]
    troubled = [b["boot"] for b in boots if b["crashed"] or b.get("kernel_trouble")]
    report = {
        "benchmark": "lab-stability",
        "date": time.strftime("%Y-%m-%d"),
        "vm": vm,
        "cycles_per_boot": cycles,
        "boots": len(boots),
        "boots_crashed": sum(b["crashed"] for b in boots),
        "boots_with_kernel_trouble": len(troubled),
        "enables": sum(c["attached"] for c in cycles_run),
        "disables": sum(c["disabled"] for c in cycles_run),
        "cycles": len(cycles_run),
        "attach_s": sorted(c["attach_s"] for c in cycles_run),
        "wall_s": wall_s,
        "runs": boots,
    }
    wanted = len(boots) * cycles
    report["clean"] = not troubled and report["enables"] == report["disables"] == wanted
    return report


def doc_figures(report: dict[str, Any]) -> dict[str, str]:
    """Block name -> the text docs/lab.md quotes (`FIGURE_DOCS`), from the report."""
    return {FIGURES: lab_figures(report)}


def lab_figures(report: dict[str, Any]) -> str:
    """The stability proof as docs/lab.md quotes it, rendered from the report."""
    vm = report["vm"]
    return (
        f"From `bench/reports/lab-stability.json` ({report['date']}, {vm['qemu'].split(' (')[0]}, "
        f"`-accel {vm['accel']} -cpu {vm['cpu_model']}`, {vm['cpus']} vCPUs): "
        f"{report['boots']} boots, {report['enables']} scx_layered enables and "
        f"{report['disables']} disables under load; boots crashed: {report['boots_crashed']}, "
        f"with an oops, BUG, warning or panic logged: {report['boots_with_kernel_trouble']}; "
        f"**{'clean' if report['clean'] else 'NOT clean'}**."
    )


def render_markdown(report: dict[str, Any]) -> str:
    vm = report["vm"]
    attach = report["attach_s"]
    lines = [
        "# Lab stability: scx_layered enables and disables under multi-threaded TCG",
        "",
        f"Run {report['date']}: {vm.get('qemu')}, `-accel {vm.get('accel')} -cpu "
        f"{vm.get('cpu_model')}`, {vm.get('cpus')} vCPUs pinned {vm.get('vcpu_pins')} "
        "(vCPU: host CPU), kernel as provisioned.",
        "",
        f"- Boots: {report['boots']}, crashed: {report['boots_crashed']}, with kernel trouble "
        f"lines (oops, BUG, warning, panic): {report['boots_with_kernel_trouble']}.",
        f"- scx_layered enables: {report['enables']}, disables: {report['disables']} of "
        f"{report['cycles']} cycles ({report['cycles_per_boot']} per boot), each under a pipe "
        "ping-pong and a spinner.",
        f"- Attach time: min {attach[0] if attach else '-'} s, median "
        f"{attach[len(attach) // 2] if attach else '-'} s, max {attach[-1] if attach else '-'} s.",
        f"- Static-key storm: {report.get('storm_toggles_per_boot') or 0} flips per boot.",
        f"- Verdict: **{'clean' if report['clean'] else 'NOT clean'}**. Wall time "
        f"{report['wall_s']} s.",
        "",
        "## Reproduce",
        "",
        "```",
        f"python bench/lab_stability.py --boots {report['boots']} --cycles "
        f"{report['cycles_per_boot']}"
        + (
            f" --storm {report['storm_toggles_per_boot']}"
            if report.get("storm_toggles_per_boot")
            else ""
        ),
        "```",
        "",
    ]
    troubled = [r for r in report["runs"] if r["crashed"] or r.get("kernel_trouble")]
    if troubled:
        lines += ["## Boots with kernel trouble", ""]
        for r in troubled:
            lines.append(f"- boot {r['boot']}: " + "; ".join(r["kernel_trouble"][:4]))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
