"""Fake host trees: the fakes beside the `read_machine_shape`, kernel gate and sched_ext ports.

`write_fake_sysfs(root, shape)` writes under `root` exactly the files `read_machine_shape` reads,
laid out and formatted as the kernel does, so `read_machine_shape(root) == shape`. Tests, the
benchmark and the bundled example node use it to stand in for a machine they do not have;
tests then edit the tree (take a CPU offline, drop the cache directories) to reach the
fallbacks real machines need.

`write_fake_kernel` writes what `read_kernel_gate` reads (a kernel that passes by default; each
argument fails one check), and `write_fake_sched_ext` writes the sched_ext state files as the
kernel shows them at one moment, so tests can step a scheduler through its lifecycle.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from temper.host.kernel import (
    BOOT_DIR,
    BTF_VMLINUX,
    CMDLINE,
    CONFIG_OPTION,
    OSRELEASE,
    PROC_CONFIG,
)
from temper.host.machine import CPU_DIR, NODE_DIR
from temper.host.sched_ext import SCHED_EXT_DIR, SYSRQ_TRIGGER
from temper.policy.machine import CpuGroups, MachineShape, format_cpu_list


def write_fake_sysfs(root: Path, shape: MachineShape) -> Path:
    """Write the sysfs files describing `shape` under `root` and return `root`."""
    cpu_dir = root / CPU_DIR
    _write(cpu_dir / "online", shape.cpus)
    for cpu in shape.cpus:
        _write_cpu(cpu_dir / f"cpu{cpu}", cpu, shape)
    for number, node in enumerate(shape.nodes):
        _write(root / NODE_DIR / f"node{number}" / "cpulist", node)
    return root


def write_fake_kernel(
    root: Path,
    *,
    release: str = "7.3.4-amd64",
    sched_ext: bool = True,
    btf: bool = True,
    config_y: bool = True,
    cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/vda1",
    config_in: str = "boot",
) -> Path:
    """Write the files the kernel gate reads under a fresh `root` and return `root`.

    `config_in` places the kernel config: "boot" (`boot/config-<release>`), "proc" (gzipped
    `proc/config.gz`) or "none". `sched_ext` writes a disabled sched_ext directory. An empty
    `proc/sysrq-trigger` stands in for the kernel's, for `trigger_sysrq_reset` to write.
    """
    _write_text(root / OSRELEASE, f"{release}\n")
    _write_text(root / CMDLINE, f"{cmdline}\n")
    _write_text(root / SYSRQ_TRIGGER, "")
    _write_config(root, release, config_y, config_in)
    if btf:
        _write_text(root / BTF_VMLINUX, "BTF\n")
    if sched_ext:
        write_fake_sched_ext(root)
    return root


def write_fake_sched_ext(
    root: Path, state: str = "disabled", ops: str | None = None, enable_seq: int = 0
) -> Path:
    """Write `sys/kernel/sched_ext` as the kernel shows it in `state`; return `root`.

    `ops` names the loaded scheduler in `root/ops`; None removes `root/`, as the kernel does
    when no scheduler is loaded. `state` is written last: a process that waits for a state
    (a fake scheduler waiting for the kernel to be free) then sees the other files settled.
    """
    directory = root / SCHED_EXT_DIR
    _write_text(directory / "enable_seq", f"{enable_seq}\n")
    if ops is None:
        shutil.rmtree(directory / "root", ignore_errors=True)
    else:
        _write_text(directory / "root" / "ops", f"{ops}\n")
    _write_text(directory / "state", f"{state}\n")
    return root


def _write_config(root: Path, release: str, config_y: bool, config_in: str) -> None:
    option = f"{CONFIG_OPTION}=y" if config_y else f"# {CONFIG_OPTION} is not set"
    text = f"CONFIG_BPF=y\nCONFIG_BPF_SYSCALL=y\nCONFIG_DEBUG_INFO_BTF=y\n{option}\n"
    if config_in == "boot":
        _write_text(root / BOOT_DIR / f"config-{release}", text)
    elif config_in == "proc":
        path = root / PROC_CONFIG
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(text.encode("ascii"), mtime=0))
    elif config_in != "none":
        raise ValueError(f"config_in must be 'boot', 'proc' or 'none', not {config_in!r}")


def _write_cpu(cpu_path: Path, cpu: int, shape: MachineShape) -> None:
    core = _group_of(cpu, shape.cores)
    _write(cpu_path / "topology" / "thread_siblings_list", core)
    _write(cpu_path / "topology" / "core_cpus_list", core)
    caches = {"index0": (1, (cpu,)), "index2": (2, core), "index3": (3, _group_of(cpu, shape.llcs))}
    for name, (level, sharing) in caches.items():
        index = cpu_path / "cache" / name
        _write_text(index / "level", f"{level}\n")
        _write(index / "shared_cpu_list", sharing)


def _group_of(cpu: int, groups: CpuGroups) -> tuple[int, ...]:
    return next(group for group in groups if cpu in group)


def _write(path: Path, cpus: tuple[int, ...]) -> None:
    _write_text(path, format_cpu_list(cpus) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Write by rename, so a concurrent reader sees the old or the new text, as sysfs reads
    are atomic; never an empty file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="ascii")
    partial.replace(path)
