"""`make demo`: Temper's proof on this machine, end to end, in the sched_ext lab.

Provisions what is missing (the lab kernel and QEMU; `make demo` builds scx_layered first),
then runs the interference benchmark (`bench/interference.py`: alone, alone_pinned, stock,
partitioned, stock_cpu_idle and temper, interleaved, for a light and a heavy LC profile) and
the restart-gap benchmark (`bench/restart_gap.py`) in the lab guest, prints a summary table
(figures, and each target's median per-repeat ratio with its range and verdict), and writes the
result as JSON to a path it prints last:

    {"kernel", "scheduler_ops", "vm": {"cpus", "accel", "qemu"},
     "profiles": {profile: {"scenarios": {name: {"lc_p50_us", "lc_p99_us", "lc_p999_us",
                                                 "lc_cpu_us_per_request", "batch_ops_per_s"}},
                            "verdicts": {target: {"median", "min", "max", "met", "fragile"}}}},
     "restart_gap_ms": {"p50", "p99", "max"}, "caveats": [...]}

    python bench/demo.py [--repeats N] [--duration-s S] [--restarts N] [--out DIR]

The full reports (markdown and JSON) of both benchmarks land in DIR too (default: a new
directory under $TEMPER_CACHE/demo). About 25 minutes on 2 cores with warm caches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCENARIO_FIELDS = (
    "lc_p50_us",
    "lc_p99_us",
    "lc_p999_us",
    "lc_cpu_us_per_request",
    "batch_ops_per_s",
)


def run_step(title: str, argv: list[str]) -> Path:
    """Run one benchmark script, its progress on our stderr; the JSON path it printed last."""
    print(f"demo: {title}", file=sys.stderr, flush=True)
    started = time.monotonic()
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
    minutes = (time.monotonic() - started) / 60
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(f"demo: {title} failed (exit {done.returncode})", file=sys.stderr)
        raise SystemExit(1)
    print(f"demo: {title} done in {minutes:.1f} min", file=sys.stderr, flush=True)
    return Path(lines[-1])


def summary(interference: dict[str, Any], gap: dict[str, Any]) -> dict[str, Any]:
    vm = interference["vm"]
    return {
        "kernel": interference["kernel"],
        "scheduler_ops": interference["scheduler_ops"],
        "vm": {"cpus": vm["cpus"], "accel": vm["accel"], "qemu": vm["qemu"]},
        "profiles": {
            name: {
                "scenarios": {
                    scenario: {k: figures[k] for k in SCENARIO_FIELDS}
                    for scenario, figures in profile["scenarios"].items()
                },
                "verdicts": {
                    target: {k: v[k] for k in ("median", "min", "max", "met", "fragile") if k in v}
                    for target, v in profile["verdicts"].items()
                },
            }
            for name, profile in interference["profiles"].items()
        },
        "restart_gap_ms": gap["restart_gap_ms"],
        "caveats": interference["caveats"] + gap["caveats"],
    }


def table(result: dict[str, Any]) -> str:
    rows = []
    for name, profile in result["profiles"].items():
        rows.append(f"LC profile {name}")
        rows.append("  scenario          p50 us    p99 us  p99.9 us  CPU us/req  batch ops/s")
        for scenario, f in profile["scenarios"].items():
            rows.append(
                f"  {scenario:<15} {f['lc_p50_us']:>8} {f['lc_p99_us']:>9} {f['lc_p999_us']:>9} "
                f"{f['lc_cpu_us_per_request']:>11} {f['batch_ops_per_s']:>12}"
            )
        rows.append("  temper, median of per-repeat ratios (range): verdict")
        for target, v in profile["verdicts"].items():
            if v.get("median") is None:
                continue
            verdict = "met" if v["met"] else "MISSED"
            fragile = ", one repeat decides" if v.get("fragile") else ""
            rows.append(
                f"    {target:<42} {v['median']:>7.2f} ({v['min']:.2f}-{v['max']:.2f}) "
                f"{verdict}{fragile}"
            )
    gap = result["restart_gap_ms"]
    rows.append(
        f"restart gap (idle guest): p50 {gap['p50']} ms, p99 {gap['p99']} ms, max {gap['max']} ms"
    )
    vm = result["vm"]
    rows.append(f"kernel {result['kernel']}, {vm['cpus']} vCPUs, {vm['qemu']}, {vm['accel']}")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Three interleaved repeats: the fewest whose median a single wild repeat cannot set.
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=20.0)
    # Each replacement under TCG waits 40-110 s for the new instance's load: 5 keep the demo
    # short; bench/reports/restart-gap.md has the 20-restart figures.
    parser.add_argument("--restarts", type=int, default=5)
    cache = Path(os.environ.get("TEMPER_CACHE", Path.home() / ".cache" / "temper"))
    parser.add_argument("--out", type=Path, default=cache / "demo" / time.strftime("%Y%m%d-%H%M%S"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    interference = run_step(
        "interference benchmark (alone, alone_pinned, stock, partitioned, stock_cpu_idle, temper)",
        [
            python,
            str(REPO / "bench" / "interference.py"),
            f"--repeats={args.repeats}",
            f"--duration-s={args.duration_s}",
            f"--out={args.out}",
        ],
    )
    gap = run_step(
        "restart gap (temper-agent replacing scx_layered)",
        [
            python,
            str(REPO / "bench" / "restart_gap.py"),
            f"--restarts={args.restarts}",
            f"--out={args.out}",
        ],
    )
    result = summary(json.loads(interference.read_text()), json.loads(gap.read_text()))
    path = args.out / "demo.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"full reports: {args.out}")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
