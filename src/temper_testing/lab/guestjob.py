"""One lab benchmark's guest side, run from the host: boot, run a lab module, collect.

The benchmark drivers under `bench/` use it: the module runs as root in a 2-vCPU guest (no
SMT; the lab's TCG mode, docs/lab.md) with the repository shared read-only and a scratch
directory shared writable, and writes its JSON there through `--out`. The host writes its own
CPU use into that directory while the guest runs (`temper_testing.lab.hostmeter`), so the module can
tell a phase disturbed from outside the guest. `GuestJob.vm` says how
the guest ran (QEMU's version, TCG mode, CPU model) and what else the host ran meanwhile.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from temper_testing.checkout import repo_root
from temper_testing.lab.provision import provision_kernel
from temper_testing.lab.qemu import Accel
from temper_testing.lab.vm import qemu_version, run_in_guest

CPUS, CORES, THREADS = 2, 2, 1
MEMORY_MB = 2048
# A guest that measures latency spins when idle instead of halting: under TCG, waking a halted
# vCPU thread costs the host hundreds of microseconds and swings from round to round
# (bench/reports/lab-costs.md), noise the scheduler under test did not cause. Hardware's idle
# exits cost microseconds. Each spinning vCPU holds its own host core.
MEASURE_KERNEL_ARGS = ("idle=poll",)
# In the scratch share: the host's CPU use, live (temper_testing.lab.hostmeter).
HOST_METER = "host-meter"


def pinned_scx_layered() -> Path:
    """Where scripts/install-scx-layered puts the pinned, patched scx_layered."""
    script = repo_root() / "scripts" / "install-scx-layered"
    out = subprocess.run([script, "--path"], capture_output=True, text=True, check=True).stdout
    return Path(out.strip())


@dataclass(frozen=True)
class GuestJob:
    """What the module wrote (empty when it wrote nothing), and how the guest run went."""

    report: dict[str, Any]
    kernel: str
    returncode: int
    wall_s: float
    vm: dict[str, Any]
    guest_json: Path | None  # a copy of what the module wrote, in the lab's run directory


def lab_accel(cpu: str) -> Accel:
    """The provisioned lab QEMU's way of running a guest, with another CPU model (a probe)."""
    return replace(provision_kernel(lambda line: None).accel, cpu=cpu)


def run_module(
    module: str,
    arguments: list[str],
    timeout_s: float,
    *,
    memory_mb: int = MEMORY_MB,
    accel: Accel | None = None,
    kernel_args: tuple[str, ...] = (),
    emulator_retries: int = 1,
) -> GuestJob:
    """Run `python -m module ARGUMENTS --out FILE` in the guest; progress goes to stderr.
    `accel` overrides how QEMU runs it (default: the provisioned lab QEMU's); `kernel_args` go
    on the guest kernel's command line (`MEASURE_KERNEL_ARGS` for a latency measurement);
    `emulator_retries` is `run_in_guest`'s."""
    kernel = provision_kernel(lambda line: print(f"lab: {line}", file=sys.stderr, flush=True))
    repo = repo_root()
    with tempfile.TemporaryDirectory(prefix="temper-guestjob") as tmp:
        shared = Path(tmp)
        out = shared / "guest.json"
        argv = [sys.executable, "-m", module, *arguments, "--out", str(out)]
        script = f"cd {shlex.quote(str(repo))} && {shlex.join(argv)}\n"
        result = run_in_guest(
            kernel,
            script,
            cpus=CPUS,
            cores=CORES,
            threads=THREADS,
            memory_mb=memory_mb,
            timeout_s=timeout_s,
            shares=[(repo, False), (shared, True)],
            accel=accel,
            kernel_args=kernel_args,
            emulator_retries=emulator_retries,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            host_meter=shared / HOST_METER,
        )
        report = json.loads(out.read_text()) if out.is_file() else {}
        kept = None
        if result.run_dir is not None:  # the raw figures and logs outlive a failed report
            shutil.copytree(shared, result.run_dir, dirs_exist_ok=True)
            kept = result.run_dir / "guest.json" if out.is_file() else None
            print(f"lab: the guest's logs and raw figures: {result.run_dir}", file=sys.stderr)
    host = result.host
    accel = accel or kernel.accel
    vm = {
        "cpus": CPUS,
        "cores": CORES,
        "threads": THREADS,
        "memory_mb": memory_mb,
        "accel": accel.qemu_accel,
        "cpu_model": accel.cpu,
        "kernel_args": list(kernel_args),
        "qemu": qemu_version(accel),
        "vcpu_pins": host.vcpu_pins if host else {},
        "host_cpus": os.cpu_count(),
        "host_busy_cpus": host.busy_cpus if host else None,
        "host_qemu_cpus": host.qemu_cpus if host else None,
        "host_other_cpus": host.other_cpus if host else None,
        "host_steal_cpus": host.steal_cpus if host else None,
    }
    return GuestJob(report, kernel.release, result.returncode, result.wall_s, vm, kept)


def tcg_mode(vm: dict[str, Any]) -> str:
    """How a report's guest ran, for its prose: reports from before `vm` was recorded ran
    single-threaded TCG."""
    accel = vm.get("accel", "tcg,thread=single")
    if accel == "tcg,thread=multi":
        return f"multi-threaded TCG (`{accel}`, each vCPU on its own host thread; {vm.get('qemu')})"
    return f"single-threaded TCG (`{accel}`, both vCPUs on one host thread)"


def doc_block(name: str, doc: Path) -> str | None:
    """The text between `<!-- NAME: ... -->` and `<!-- /NAME -->` in `doc`, or None."""
    text = doc.read_text(encoding="utf-8")
    begin = text.find(f"<!-- {name}: ")
    end = text.find(f"<!-- /{name} -->")
    if begin < 0 or end < begin:
        return None
    return text[text.index("-->", begin) + 3 : end].strip("\n")


def write_doc_block(name: str, command: str, body: str, doc: Path) -> None:
    """Put `body` between the block's markers in `doc` (appended when absent); `command` is how
    the block is regenerated, named in its opening marker. Figures quoted in prose come from a
    report this way, and a test compares the block with the report."""
    text = doc.read_text(encoding="utf-8")
    block = f"<!-- {name}: {command} -->\n{body}\n<!-- /{name} -->"
    begin = text.find(f"<!-- {name}: ")
    end = text.find(f"<!-- /{name} -->")
    if begin < 0 or end < begin:
        text = f"{text.rstrip()}\n\n{block}\n"
    else:
        text = text[:begin] + block + text[end + len(f"<!-- /{name} -->") :]
    doc.write_text(text, encoding="utf-8")


def write_report(out: Path, stem: str, report: dict[str, Any], markdown: str) -> Path:
    """Write the report into OUT as STEM.json and as Markdown beside it; print the JSON's
    path (the drivers' last line)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    print(json_path)
    return json_path
