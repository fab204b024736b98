"""Restart gap: how long a config change leaves the node on the stock scheduler.

Boots the lab's sched_ext kernel in QEMU (2 vCPUs, single-threaded TCG) and runs
`python -m temper_testing.lab.restartgap` there (see its docstring): plain stop-and-start restarts
of scx_layered first, then `--restarts` replacements by temper-agent on the idle node and as many
with CPU-bound batch filling every vCPU, sampling the kernel state and a canary thread every
millisecond.

    python bench/restart_gap.py [--restarts N] [--baseline N] [--scx-layered PATH] [--out DIR]
                                [--render-only]

Writes DIR/restart-gap.json and DIR/restart-gap.md and prints the JSON's path last. Target:
p50 at most 52 ms on the idle guest, or the measured figure with what bounds it. The figures
README.md and docs/ quote come from the committed report through `doc_figures` (each in a block
named in `FIGURE_DOCS`); `--render-only` rebuilds the report from its guest figures and rewrites
those blocks without booting a guest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from temper_testing.lab.guestjob import (
    CORES,
    CPUS,
    MEMORY_MB,
    THREADS,
    pinned_scx_layered,
    run_module,
    tcg_mode,
    write_doc_block,
    write_report,
)
from temper_testing.lab.restartgap import figures

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "bench" / "reports"
TARGET_P50_MS = 52.0
RENDER = "python bench/restart_gap.py --render-only"
# The blocks doc_figures() fills, and the docs that hold each (tests/unit/test_doc_figures.py).
FIGURE_DOCS = {"restart-gap-figures": ("README.md", "docs/lab.md", "docs/scx-layered.md")}


def observed(condition: dict[str, Any]) -> dict[str, Any]:
    """A condition's figures over the replacements whose gap the sampler saw.

    A replacement that changed `enable_seq` while no sample ever read a state other than
    `enabled` has no phases: its 0 ms is a sampler miss, not a gap, and is left out (counted).
    """
    phases = condition["phases_ms"]
    keep = [i for i, p in enumerate(phases) if p]
    out = {
        measure: figures([condition[measure]["gaps_ms"][i] for i in keep])
        for measure in ("state", "canary")
    }
    return {**out, "phases_ms": [phases[i] for i in keep], "unobserved": len(phases) - len(keep)}


def build_report(
    guest: dict[str, Any],
    release: str,
    code: int,
    wall_s: float,
    run_notes: list[str],
    *,
    vm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # The guest's raw figures stay as measured; `figures` has them without sampler misses.
    clean: dict[str, Any] = dict(guest)
    for condition in ("idle", "saturated"):
        if guest.get(condition):
            clean[condition] = observed(guest[condition])
        else:
            clean.pop(condition, None)
    idle = clean.get("idle", {}).get("state", {})
    report = {
        "benchmark": "restart-gap",
        "date": time.strftime("%Y-%m-%d"),
        "kernel": release,
        "vm": vm
        or {"cpus": CPUS, "cores": CORES, "threads": THREADS, "accel": "tcg,thread=single"},
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "restart_gap_ms": {k: idle.get(k) for k in ("p50", "p99", "max")},
        "target": {"idle_p50_ms_max": TARGET_P50_MS, "met": _met(idle.get("p50"))},
        "figures": clean,
        "guest": guest,
        "guest_exit": code,
        "guest_wall_s": round(wall_s, 1),
        "run_notes": run_notes,
    }
    report["caveats"] = caveats(report)
    return report


def _met(p50: float | None) -> bool | None:
    return None if p50 is None else p50 <= TARGET_P50_MS


def _mean_phases(phases: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for p in phases for k in p})
    return {k: round(sum(p.get(k, 0.0) for p in phases) / len(phases), 1) for k in keys}


def caveats(report: dict[str, Any]) -> list[str]:
    guest = report["figures"]
    notes = list(report.get("run_notes", []))
    notes += [
        f"Measured in a QEMU guest under {tcg_mode(report.get('vm', {}))}, not "
        "on hardware: the kernel's disable and enable paths and scx_layered's BPF load run "
        "emulated, many times slower than on a real node. Compare the conditions of this run "
        "with each other, not with hardware figures.",
        f"The sampler polls every {guest.get('sample_interval_ms', 1)} ms from a Python thread "
        "that itself competes for the guest's CPUs; a gap is known to about one sampling "
        "interval plus that thread's scheduling delay (more on the saturated node).",
        "`state` is the kernel's /sys/kernel/sched_ext/state away from `enabled`; `canary` is a "
        "critical pod's thread whose /proc/<tid>/sched says `ext.enabled: 0`. The canary also "
        "leaves sched_ext while the kernel is `disabling` and rejoins during `enabling`.",
    ]
    if "error" in guest:
        done = {c: guest[c]["state"]["n"] for c in ("idle", "saturated") if c in guest}
        notes.append(
            f"The run stopped early: {guest['error']}. Replacements measured before that: "
            f"{done}. The agent's log (JSON, in restart-gap.json) has the scheduler's last "
            "output for every exit."
        )
    missed = {c: guest[c].get("unobserved", 0) for c in ("idle", "saturated") if c in guest}
    if any(missed.values()):
        notes.append(
            f"Replacements whose gap no sample saw (`enable_seq` changed, every sample read "
            f"`enabled`), left out of the figures: {missed}. A read of the state file that "
            "blocks across the kernel's transition would look like this; the longest interval "
            f"between samples was {guest.get('longest_sample_interval_ms', 'not recorded')} ms."
        )
    p50 = report["restart_gap_ms"].get("p50")
    if p50 is not None and p50 > TARGET_P50_MS:
        phases = _mean_phases(guest.get("idle", {}).get("phases_ms", []))
        notes.append(
            f"Target missed on the idle guest: p50 {p50} ms against {TARGET_P50_MS:.0f} ms "
            f"({p50 / TARGET_P50_MS:.1f}x). What bounds it: the mean time per kernel state "
            f"within a gap was {phases} ms. `disabling` is the kernel moving every task back to "
            "the fair class; `disabled` lasts until the old scheduler's sysfs directory `root` "
            "is released (no scheduler can attach before: the kernel names each one `root`) and "
            "the new instance's attach has started the kernel's enable; `enabling` is the "
            "kernel initialising every task into the new scheduler. All of it is kernel work "
            "under emulation; none of it is the BPF load (20-35 s here), which the replacement "
            "moved out of the gap. Shrinking it further needs the kernel, not scx_layered."
        )
    return notes


def render_markdown(report: dict[str, Any]) -> str:
    guest = report["figures"]
    lines = [
        "# Restart gap: time on the stock scheduler when the config changes",
        "",
        f"Run {report['date']}. **Measured under QEMU TCG, not on hardware** (see caveats).",
        "",
        "## Setup",
        "",
        f"- Kernel `{report['kernel']}` in QEMU, {tcg_mode(report.get('vm', {}))}, "
        f"`-smp {CPUS},cores={CORES},threads={THREADS}`, {MEMORY_MB} MB; host "
        f"{report['host']['cpus']} cores.",
        "- Simulated node: `lc` (Guaranteed, temper-critical) with the canary thread, `flip` "
        "(Burstable) whose PriorityClass alternates temper-high / none, so each flip makes the "
        "running config misplace it and temper-agent replaces scx_layered (ADR 0003: the new "
        "instance loads beside the old and attaches the moment it leaves).",
        "- `stop_start`: scx_layered stopped with SIGTERM and started again, no agent: the gap "
        "without the replacement. `saturated`: a background pod spinning 2 processes per vCPU.",
        f"- Guest wall time {report['guest_wall_s']} s; guest exit {report['guest_exit']}.",
        "",
        "## Results (ms on the stock scheduler per restart)",
        "",
        "| condition | measure | n | p50 | p99 | max |",
        "|---|---|---:|---:|---:|---:|",
    ]
    rows: list[tuple[str, str, dict[str, Any]]] = []
    if "stop_start" in guest:
        rows.append(("stop_start", "state", guest["stop_start"]))
    for condition in ("idle", "saturated"):
        for measure in ("state", "canary"):
            if condition in guest:
                rows.append((condition, measure, guest[condition][measure]))
    for condition, measure, f in rows:
        lines.append(
            f"| {condition} | {measure} | {f['n']} | {f['p50']} | {f['p99']} | {f['max']} |"
        )
    target = report["target"]
    verdict = {True: "met", False: "missed", None: "not measured"}[target["met"]]
    lines += [
        "",
        f"Target: idle p50 at most {TARGET_P50_MS:.0f} ms: **{verdict}**.",
        "",
        "## Where the time goes (ms per kernel state within each gap, mean)",
        "",
        "| condition | phases |",
        "|---|---|",
    ]
    for condition in ("idle", "saturated"):
        if condition in guest:
            lines.append(f"| {condition} | {_mean_phases(guest[condition]['phases_ms'])} |")
    lines += ["", "## Raw gaps (ms, state)", ""]
    for name in ("stop_start", "idle", "saturated"):
        if name in guest:
            figures = guest[name] if name == "stop_start" else guest[name]["state"]
            lines.append(f"- {name}: {figures['gaps_ms']}")
    lines += ["", "## Caveats", ""]
    lines += [f"- {note}" for note in report["caveats"]]
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        f"python bench/restart_gap.py --restarts {guest.get('restarts', 20)}",
        "```",
        "",
    ]
    return "\n".join(lines)


def doc_figures(report: dict[str, Any]) -> dict[str, str]:
    """The figures README.md and docs/ quote, rendered from the report so they cannot drift:
    block name -> its text (`FIGURE_DOCS` says which docs hold it)."""
    found = report["figures"]
    stop = [gap / 1000 for gap in found["stop_start"]["gaps_ms"]]
    idle, saturated = found["idle"]["state"], found["saturated"]["state"]
    stopped = f"{min(stop):.1f}-{max(stop):.1f} s" if len(stop) > 1 else f"{stop[0]:.1f} s"
    text = (
        "In the lab, under QEMU TCG, stopping and starting scx_layered left the node on the stock "
        f"scheduler for {stopped}; a replacement by the agent, for {idle['p50'] / 1000:.2f} s at "
        f"p50 on an idle node and {saturated['p50'] / 1000:.2f} s on a saturated one (p99 "
        f"{idle['p99'] / 1000:.2f} s and {saturated['p99'] / 1000:.2f} s, {idle['n']} "
        "replacements each; bench/reports/restart-gap.md)."
    )
    return {
        "restart-gap-figures": textwrap.fill(
            text, width=100, break_long_words=False, break_on_hyphens=False
        )
    }


def publish(out: Path, report: dict[str, Any]) -> None:
    """Write the report; when it is the committed one, the blocks the docs quote too."""
    write_report(out, "restart-gap", report, render_markdown(report))
    if out.resolve() != REPORTS:
        return
    try:
        texts = doc_figures(report)
    except (LookupError, ValueError) as exc:  # a run that stopped early: the docs keep theirs
        print(
            f"restart_gap: the docs keep their figures, this report lacks some ({exc!r})",
            file=sys.stderr,
        )
        return
    for block, text in texts.items():
        for doc in FIGURE_DOCS[block]:
            write_doc_block(block, RENDER, text, REPO / doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--baseline", type=int, default=3)
    parser.add_argument("--scx-layered", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument(
        "--note",
        action="append",
        default=[],
        help="a fact about this run for the caveats (e.g. what else the host ran); repeatable",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rebuild DIR/restart-gap.{json,md} from the guest figures in DIR/restart-gap.json "
        "(and the figures the docs quote)",
    )
    args = parser.parse_args()
    json_path = args.out / "restart-gap.json"
    if args.render_only:
        old = json.loads(json_path.read_text())
        notes = old.get("run_notes", []) + args.note
        report = build_report(
            old["guest"],
            old["kernel"],
            old["guest_exit"],
            old["guest_wall_s"],
            notes,
            vm=old.get("vm"),
        )
        report["date"] = old["date"]
        publish(args.out, report)
        return 0
    scx = args.scx_layered or pinned_scx_layered()
    if not scx.is_file():
        parser.error(f"{scx}: no scx_layered there (make scx-layered builds it)")
    job = run_module(
        "temper_testing.lab.restartgap",
        [f"--scx-layered={scx}", f"--restarts={args.restarts}", f"--baseline={args.baseline}"],
        timeout_s=300 + 150 * (2 * args.restarts + args.baseline),
    )
    if not job.report:
        print(f"the guest wrote no report (exit {job.returncode})", file=sys.stderr)
        return 1
    report = build_report(job.report, job.kernel, job.returncode, job.wall_s, args.note, vm=job.vm)
    publish(args.out, report)
    return 0 if job.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
