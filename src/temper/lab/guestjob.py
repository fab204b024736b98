"""One lab benchmark's guest side, run from the host: boot, run a `temper.lab` module, collect.

The benchmark drivers under `bench/` use it: the module runs as root in a 2-vCPU guest (no
SMT; single-threaded TCG, docs/lab.md) with the repository shared read-only and a scratch
directory shared writable, and writes its JSON there through `--out`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temper.lab.provision import provision_kernel
from temper.lab.vm import run_in_guest

REPO = Path(__file__).resolve().parents[3]
CPUS, CORES, THREADS = 2, 2, 1
MEMORY_MB = 2048


def pinned_scx_layered() -> Path:
    """Where scripts/install-scx-layered puts the pinned, patched scx_layered."""
    script = REPO / "scripts" / "install-scx-layered"
    out = subprocess.run([script, "--path"], capture_output=True, text=True, check=True).stdout
    return Path(out.strip())


@dataclass(frozen=True)
class GuestJob:
    """What the module wrote (empty when it wrote nothing), and how the guest run went."""

    report: dict[str, Any]
    kernel: str
    returncode: int
    wall_s: float


def run_module(
    module: str, arguments: list[str], timeout_s: float, memory_mb: int = MEMORY_MB
) -> GuestJob:
    """Run `python -m module ARGUMENTS --out FILE` in the guest; progress goes to stderr."""
    kernel = provision_kernel(lambda line: print(f"lab: {line}", file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="temper-guestjob") as tmp:
        shared = Path(tmp)
        out = shared / "guest.json"
        script = f"cd {REPO} && {sys.executable} -m {module} {' '.join(arguments)} --out {out}\n"
        result = run_in_guest(
            kernel,
            script,
            cpus=CPUS,
            cores=CORES,
            threads=THREADS,
            memory_mb=memory_mb,
            timeout_s=timeout_s,
            shares=[(REPO, False), (shared, True)],
        )
        print(result.output, file=sys.stderr)
        report = json.loads(out.read_text()) if out.is_file() else {}
    return GuestJob(report, kernel.release, result.returncode, result.wall_s)


def write_report(out: Path, stem: str, report: dict[str, Any], markdown: str) -> Path:
    """Write OUT/STEM.json and OUT/STEM.md; print the JSON's path (the drivers' last line)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    print(json_path)
    return json_path
