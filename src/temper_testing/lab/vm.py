"""Run a shell job as root in a QEMU guest booted on the lab kernel, and get its result back.

The guest is the host, seen through a sched_ext kernel: QEMU shares the host's root directory
read-only over virtio-9p, and the init script (`init.sh`) runs the job chrooted into it, so the
job uses the host's Python, venv and binaries. Each run gets a directory
`lab_cache()/runs/<unique>/` holding `job.sh`, QEMU's serial `console`, the `result` file that
receives the virtio serial port `lab.result`, and `qemu.log` (QEMU's own messages); the newest
`KEEP_RUNS` are kept for inspection.

The QEMU command line, with the reasons:

- `-accel tcg,thread=multi -cpu max` with the provisioned QEMU (`temper_testing.lab.qemu`, Debian's
  backport): the host has /dev/kvm but nested virtualization does not work, so TCG it is; each
  vCPU gets a host thread of its own, pinned to a host CPU of its own (`pin_vcpus`), so a busy
  batch vCPU no longer slows the critical one. The host release's QEMU 7.2 oopsed the guest
  kernel in text patching under multi-threaded TCG and ran single-threaded; the backport's
  stability proof is in docs/lab.md. `LabKernel.accel` carries the choice; a caller may pass
  another `Accel` (the stability bench does, to reproduce the old finding).
- `-name temper-lab,debug-threads=on`: QEMU names its vCPU threads `CPU <n>/TCG`, which is how
  they are found for pinning.
- `-kernel vmlinux` (an ELF, booted through PVH) with `-bios qboot.rom`: skips SeaBIOS and the
  bzImage decompressor; a boot to the job is about 5-8 s. Without qboot, QEMU's default BIOS
  is used (slower, same result).
- `-smp cpus,cores=C,threads=T`: an SMT topology, so whole-core logic can be tested
  (docs/testing.md#the-kernel-lab).
- The job's output and exit status come through a virtio serial port, not the console: the
  console carries kernel messages, and a tool that scraped it (virtme-ng) lost the exit status.

`GuestResult.host` says what the host's CPUs did meanwhile (QEMU's share and everything else)
and where each vCPU was pinned, for the benchmark reports.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from temper.host.scheduler import die_with_parent
from temper_testing.lab import hostmeter
from temper_testing.lab.errors import LabError
from temper_testing.lab.provision import LabKernel, lab_cache
from temper_testing.lab.qemu import Accel

QEMU = "qemu-system-x86_64"
QBOOT = Path("/usr/share/qemu/qboot.rom")  # from qemu-system-data
CONSOLE_TAIL_LINES = 40
# Boot to the init script's "lab: ready" on a quiet host: 5.4-8.5 s over 12 boots (2026-12-03);
# a busy host's CI boots took 15-21 s. A job's bound stretches by the same factor (`boot_pace`).
QUIET_BOOT_S = 8.0
KEEP_RUNS = 20
CMDLINE_MAX_BYTES = 2047  # x86 COMMAND_LINE_SIZE is 2048 with the terminating NUL
# Paths go on the kernel command line and into QEMU's comma-separated options: keep them plain.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_./+@%=~-]*")
_KERNEL_ARG = re.compile(r"[A-Za-z0-9_.-]+(=[A-Za-z0-9_.,-]+)?")
_RC = b"__LAB_RC__="
_FATAL = b"__LAB_FATAL__="
_READY = re.compile(rb"lab: ready uptime=([0-9.]+)")
# The emulator's text-patching race (docs/adr/0006) kills the guest with an int3 oops.
_INT3_OOPS = b"Oops: int3"
_CODE_LINE = re.compile(rb"Code: ((?:[0-9a-f]{2} )*)<[0-9a-f]{2}>")  # <..>: the byte at RIP


@dataclass(frozen=True)
class GuestResult:
    """What a job in the guest did: its exit status, its stdout+stderr, and the boot-to-off time."""

    returncode: int
    output: str
    wall_s: float  # from starting QEMU to its exit: boot, job and power-off
    host: HostLoad | None = None  # what the host's CPUs did meanwhile
    run_dir: Path | None = None  # the run's directory: job, console, QEMU's log (kept)


@dataclass(frozen=True)
class HostLoad:
    """The host's CPUs over one guest run: all busy time, and QEMU's own share of it."""

    busy_cpus: float  # mean host CPUs busy (from /proc/stat), QEMU included
    qemu_cpus: float  # mean host CPUs QEMU used (its rusage)
    vcpu_pins: dict[int, int]  # vCPU -> the host CPU its thread was pinned to ({}: none)
    steal_cpus: float = 0.0  # mean host CPUs the hypervisor took (part of busy_cpus)

    @property
    def other_cpus(self) -> float:
        """What else ran on the host or took its CPUs: the noise beside the guest."""
        return round(max(self.busy_cpus - self.qemu_cpus, 0.0), 2)


@dataclass(frozen=True)
class Share:
    """A host directory mounted at the same path in the guest, over its own 9p device."""

    tag: str
    path: Path
    writable: bool


@dataclass(frozen=True)
class ResultPort:
    """What the guest wrote to the result port, split into the job's output and the trailer."""

    returncode: int | None  # None when the guest never reported one
    output: str
    fatal: str | None  # the init script's own failure, when it had one


def run_in_guest(
    kernel: LabKernel,
    script: str,
    *,
    cpus: int = 4,
    cores: int = 2,
    threads: int = 2,
    memory_mb: int = 2048,
    timeout_s: float = 900,
    shares: Sequence[tuple[Path, bool]] = (),
    kernel_args: Sequence[str] = (),
    accel: Accel | None = None,
    progress: Callable[[str], None] | None = None,
    host_meter: Path | None = None,
    emulator_retries: int = 1,
) -> GuestResult:
    """Boot a guest, run `script` (shell, as root, chrooted into the host root, cwd /), return.

    `kernel_args` go on the guest kernel's command line (e.g. `isolcpus=1`). `progress` gets
    each line of the job's output as it arrives (the result has all of it anyway).
    `shares` are host directories (path, writable) mounted at the same path in the guest, after
    its tmpfs mounts over /tmp, /run and /var/tmp. With `host_meter` (a path in a writable
    share), the host's CPU use is written there while the guest runs and the job finds it in
    `$TEMPER_LAB_HOST_METER` (`temper_testing.lab.hostmeter`). `timeout_s` is a quiet host's
    bound: once the guest is up it stretches by how much slower than `QUIET_BOOT_S` the guest
    booted (`boot_pace`). Raises `LabError` when QEMU runs past it (it is killed) or the guest
    never reports an exit status; both carry the console's last lines. A job that exits non-zero
    is a result, not an error, unless the emulator's text-patching race oopsed the kernel
    meanwhile (`EmulatorFault`, docs/adr/0006): such a guest is booted again, at most
    `emulator_retries` times, each dead run kept and named on stderr; the stability proof passes
    0, since counting those deaths is its job.
    """
    _check_topology(cpus, cores, threads)
    planned = plan_shares(shares)
    if host_meter is not None:
        host_meter = host_meter.parent.resolve() / host_meter.name  # the guest's path too
        if not any(s.writable and host_meter.parent == s.path for s in planned):
            raise LabError(f"host_meter {host_meter} is not in a writable share")
        script = f"export {hostmeter.ENV}={shlex.quote(str(host_meter))}\n{script}"
    boot = functools.partial(
        _boot,
        kernel,
        script,
        planned,
        cpus=cpus,
        cores=cores,
        threads=threads,
        memory_mb=memory_mb,
        timeout_s=timeout_s,
        kernel_args=kernel_args,
        accel=accel,
        progress=progress,
        host_meter=host_meter,
    )
    for attempt in range(emulator_retries):
        try:
            return boot()
        except EmulatorFault as fault:
            print(
                f"lab: the guest died of the emulator's text-patching race (docs/adr/0006), "
                f"run kept at {fault.run_dir}; booting again ({attempt + 1} of "
                f"{emulator_retries})",
                file=sys.stderr,
                flush=True,
            )
    return boot()


def _boot(
    kernel: LabKernel,
    script: str,
    planned: Sequence[Share],
    *,
    cpus: int,
    cores: int,
    threads: int,
    memory_mb: int,
    timeout_s: float,
    kernel_args: Sequence[str],
    accel: Accel | None,
    progress: Callable[[str], None] | None,
    host_meter: Path | None,
) -> GuestResult:
    """One boot of `run_in_guest`'s job, in a run directory of its own."""
    run_dir = _new_run_dir(lab_cache() / "runs")
    job = run_dir / "job.sh"
    job.write_text(script, encoding="utf-8")
    command = qemu_command(
        kernel,
        run_dir,
        job,
        planned,
        cpus=cpus,
        cores=cores,
        threads=threads,
        memory_mb=memory_mb,
        kernel_args=kernel_args,
        accel=accel,
    )
    start, (busy_0, steal_0), qemu_0 = time.monotonic(), hostmeter.host_cpu_s(), _children_cpu_s()
    pin = cpus if (accel or kernel.accel).tcg_threads == "multi" else 0
    qemu_rc, pins = _run_qemu(command, run_dir, timeout_s, pin, progress, host_meter=host_meter)
    wall_s = time.monotonic() - start
    busy_1, steal_1 = hostmeter.host_cpu_s()
    host = HostLoad(
        round((busy_1 - busy_0) / wall_s, 2),
        round((_children_cpu_s() - qemu_0) / wall_s, 2),
        pins,
        round((steal_1 - steal_0) / wall_s, 2),
    )
    report = parse_result_port((run_dir / "result").read_bytes())
    if report.fatal is not None:
        raise _guest_error(f"the guest's init failed: {report.fatal}", run_dir)
    if report.returncode is None:
        raise _guest_error(
            f"the guest never reported an exit status (QEMU exit {qemu_rc})", run_dir
        )
    if emulator_fault(_console(run_dir)) is not None:  # whatever the job made of it
        raise _guest_error(f"the job exited {report.returncode} beside a kernel oops", run_dir)
    return GuestResult(report.returncode, report.output, wall_s, host, run_dir)


def plan_shares(shares: Sequence[tuple[Path, bool]]) -> list[Share]:
    """Check the shared directories and give each a 9p tag; parents come before children."""
    resolved: dict[Path, bool] = {}
    for path, writable in shares:
        real = path.resolve()
        if not real.is_dir():
            raise LabError(f"shared directory {path} does not exist")
        if real == Path("/") or not _PLAIN_PATH.fullmatch(str(real)):
            raise LabError(
                f"cannot share {real}: use a directory path of letters, digits, ._/+@%=~-"
            )
        resolved[real] = resolved.get(real, False) or writable
    ordered = sorted(resolved.items(), key=lambda item: (len(item[0].parts), str(item[0])))
    return [Share(f"share{i}", path, writable) for i, (path, writable) in enumerate(ordered)]


def qemu_command(
    kernel: LabKernel,
    run_dir: Path,
    job: Path,
    shares: Sequence[Share],
    *,
    cpus: int,
    cores: int,
    threads: int,
    memory_mb: int,
    kernel_args: Sequence[str] = (),
    accel: Accel | None = None,
) -> list[str]:
    """The QEMU argv for one run (see the module docstring for each choice)."""
    for path in (run_dir, job):
        if not _PLAIN_PATH.fullmatch(str(path)):
            raise LabError(f"the lab cache path {path} must be letters, digits and ._/+@%=~-")
    for arg in kernel_args:
        if not _KERNEL_ARG.fullmatch(arg):
            raise LabError(f"kernel argument {arg!r}: want key=value of letters, digits, ,.-_")
    append = " ".join(["console=ttyS0 quiet panic=-1", *kernel_args, f"lab_script={job}"])
    if shares:
        mode = {True: "rw", False: "ro"}
        append += " lab_shares=" + ",".join(f"{s.tag}:{s.path}:{mode[s.writable]}" for s in shares)
    if len(append.encode()) > CMDLINE_MAX_BYTES:
        raise LabError(
            f"the kernel command line is too long ({len(append)} bytes): share fewer paths"
        )
    accel = accel or kernel.accel
    qboot = (accel.firmware or QBOOT.parent) / QBOOT.name
    command = [
        accel.qemu,
        *(("-L", str(accel.firmware)) if accel.firmware else ()),
        *("-machine", "pc", "-accel", accel.qemu_accel, "-cpu", accel.cpu),
        *("-name", "temper-lab,debug-threads=on"),
        *("-smp", f"{cpus},cores={cores},threads={threads}", "-m", str(memory_mb)),
        *("-nographic", "-nodefaults", "-no-reboot", "-serial", f"file:{run_dir / 'console'}"),
        *(("-bios", str(qboot)) if qboot.is_file() else ()),
        *("-kernel", str(kernel.vmlinux), "-initrd", str(kernel.initrd), "-append", append),
        *_ninep("hostroot", Path("/"), writable=False),
        *("-device", "virtio-serial-pci"),
        *("-chardev", f"file,id=result,path={run_dir / 'result'}"),
        *("-device", "virtserialport,chardev=result,name=lab.result"),
    ]
    for share in shares:
        command += _ninep(share.tag, share.path, writable=share.writable)
    return command


def parse_result_port(data: bytes) -> ResultPort:
    """Split the result port's bytes: the job's output, then `\\n__LAB_RC__=<rc>\\n` last.

    The init script writes a newline before the trailer, so output that does not end in one
    still leaves the trailer on its own line; that newline is not part of the output.
    """
    head, _, last = data.rstrip(b"\n").rpartition(b"\n")
    output = head.decode("utf-8", errors="replace")
    if last.startswith(_RC) and last[len(_RC) :].isdigit():
        return ResultPort(int(last[len(_RC) :]), output, None)
    if last.startswith(_FATAL):
        return ResultPort(None, output, last[len(_FATAL) :].decode(errors="replace"))
    return ResultPort(None, data.decode("utf-8", errors="replace"), None)


def console_tail(run_dir: Path, lines: int = CONSOLE_TAIL_LINES) -> str:
    """The last `lines` lines of a run's serial console (empty when there is none)."""
    try:
        text = (run_dir / "console").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _ninep(tag: str, path: Path, *, writable: bool) -> list[str]:
    readonly = "" if writable else ",readonly=on"
    fsdev = f"local,id={tag},path={path},security_model=none,multidevs=remap{readonly}"
    return ["-fsdev", fsdev, "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]


def _run_qemu(
    command: list[str],
    run_dir: Path,
    timeout_s: float,
    vcpus: int,
    progress: Callable[[str], None] | None,
    *,
    host_meter: Path | None = None,
) -> tuple[int, dict[int, int]]:
    """Run QEMU to its exit; its status and the vCPU pins (`pin_vcpus`, when `vcpus` > 0).
    Each whole line the job writes goes to `progress` as it arrives; the host's CPU use goes to
    `host_meter` every `hostmeter.METER_PERIOD_S`. Past `timeout_s`, stretched by `boot_pace`
    once the guest is up, QEMU is killed and LabError raised."""
    if shutil.which(command[0]) is None:
        raise LabError(
            f"{command[0]} not found: run `python -m temper_testing.lab provision` first"
        )
    result = run_dir / "result"
    result.write_bytes(b"")
    returncode: int | None = None
    pins: dict[int, int] = {}
    started = time.monotonic()
    deadline, pace = started + timeout_s, None
    tick = hostmeter.METER_PERIOD_S if host_meter is not None else 1.0
    with (run_dir / "qemu.log").open("wb") as log, result.open("rb") as job_output:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent,  # noqa: PLW1509 (a killed benchmark leaves no guest behind)
        )
        try:
            if vcpus:
                pins = pin_vcpus(proc.pid, vcpus)
            while returncode is None and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    returncode = proc.wait(timeout=min(tick, max(deadline - time.monotonic(), 0)))
                _forward_lines(job_output, progress)
                if pace is None and (pace := boot_pace(run_dir)) is not None:
                    deadline = started + timeout_s * pace
                if host_meter is not None and returncode is None:
                    with contextlib.suppress(OSError):  # QEMU exiting under us
                        hostmeter.write_sample(host_meter, hostmeter.sample_host(proc.pid))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if returncode is None:
        bound = (
            f"{timeout_s:g} s"
            if pace is None
            else f"{timeout_s * pace:.0f} s (boot pace {pace:.2f})"
        )
        raise _guest_error(f"the guest did not finish within {bound}; QEMU killed", run_dir)
    return returncode, pins


def boot_pace(run_dir: Path) -> float | None:
    """How much slower than a quiet host the guest booted (at least 1), once its console says it
    is ready; None before that."""
    try:
        found = _READY.search((run_dir / "console").read_bytes())
    except OSError:
        return None
    return None if found is None else max(1.0, float(found.group(1)) / QUIET_BOOT_S)


def _forward_lines(job_output: BinaryIO, progress: Callable[[str], None] | None) -> None:
    """Hand the job's whole new lines to `progress`; a partial line waits for its end."""
    if progress is None:
        return
    while line := job_output.readline():
        if not line.endswith(b"\n"):
            job_output.seek(-len(line), os.SEEK_CUR)
            return
        text = line.decode("utf-8", errors="replace").rstrip("\n")
        if text and not text.startswith("__LAB_"):
            progress(text)


def pin_vcpus(pid: int, vcpus: int, timeout_s: float = 10.0) -> dict[int, int]:
    """Pin each vCPU thread of QEMU `pid` (named `CPU <n>/TCG` with debug-threads) to a host
    CPU of its own, round robin over the CPUs this process may use; {vCPU: host CPU}.

    Without pinning the host's scheduler may stack both vCPU threads on one core for a while,
    which is the single-threaded lab's tax again. The threads appear as the vCPUs are created,
    so they are looked for until all are there or `timeout_s` passes.
    """
    host_cpus = sorted(os.sched_getaffinity(0))
    deadline = time.monotonic() + timeout_s
    pins: dict[int, int] = {}
    while len(pins) < vcpus and time.monotonic() < deadline:
        for tid, vcpu in _vcpu_threads(pid).items():
            if vcpu not in pins:
                with contextlib.suppress(OSError):  # QEMU may exit meanwhile
                    os.sched_setaffinity(tid, {host_cpus[vcpu % len(host_cpus)]})
                    pins[vcpu] = host_cpus[vcpu % len(host_cpus)]
        time.sleep(0.05)
    return pins


def _vcpu_threads(pid: int) -> dict[int, int]:
    """{thread id: vCPU index} of QEMU's TCG vCPU threads."""
    found = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            match = hostmeter.VCPU_THREAD.fullmatch((task / "comm").read_text().strip())
            if match:
                found[int(task.name)] = int(match.group(1))
    return found


class EmulatorFault(LabError):
    """The guest kernel died of the emulator's text-patching race (`emulator_fault`), not of
    anything the job did."""

    def __init__(self, message: str, run_dir: Path) -> None:
        super().__init__(message)
        self.run_dir = run_dir


def _guest_error(problem: str, run_dir: Path) -> LabError:
    qemu_log = (run_dir / "qemu.log").read_text(encoding="utf-8", errors="replace").strip()
    qemu_part = f"\nQEMU said:\n{qemu_log}" if qemu_log else ""
    tail = console_tail(run_dir)
    message = (
        f"{problem}; run directory {run_dir}{qemu_part}\n"
        f"last {CONSOLE_TAIL_LINES} console lines:\n{tail}"
    )
    evidence = emulator_fault(_console(run_dir))
    if evidence is not None:
        return EmulatorFault(
            f"the emulator's text-patching race (docs/adr/0006; {evidence}): {message}", run_dir
        )
    return LabError(message)


def _console(run_dir: Path) -> bytes:
    try:
        return (run_dir / "console").read_bytes()
    except OSError:
        return b""


def emulator_fault(console: bytes) -> str | None:
    """Why a dead guest's console shows the emulator's text-patching race, or None.

    The race ends in an int3 oops, and the console proves whose int3 it was in one of two ways:
    the code the oops dumps holds no int3 before the trapping address (the kernel had patched
    that spot by the time it printed, so the int3 was its own patching's), or the kernel was
    patching its text (`text_poke`) when it died. An int3 oops with neither is a kernel bug,
    and is not retried."""
    at = console.find(_INT3_OOPS)
    if at < 0:
        return None
    code = _CODE_LINE.search(console, at)
    if code is not None and code.group(1) and not code.group(1).endswith(b"cc "):
        return "the oops's code shows no int3 where the CPU trapped on one"
    if b"text_poke" in console:
        return "an int3 oops while the kernel patched its text"
    return None


def qemu_version(accel: Accel) -> str:
    """QEMU's own version line, e.g. `QEMU emulator version 10.0.2 (Debian ...)`."""
    binary = accel.qemu
    try:
        done = subprocess.run(
            [binary, "--version"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"cannot run {binary} --version: {exc}") from exc
    return done.stdout.splitlines()[0].strip() if done.stdout else "unknown"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _check_topology(cpus: int, cores: int, threads: int) -> None:
    if min(cpus, cores, threads) < 1 or cpus % (cores * threads) != 0:
        raise LabError(
            f"cpus={cpus} is not a whole number of sockets of cores={cores} x threads={threads}"
        )


def _new_run_dir(runs: Path) -> Path:
    runs.mkdir(parents=True, exist_ok=True)
    existing = sorted(p for p in runs.iterdir() if p.is_dir())
    for old in existing[: max(0, len(existing) - KEEP_RUNS + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=runs))
