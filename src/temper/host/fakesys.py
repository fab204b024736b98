"""A fake sysfs tree: the fake beside the `read_machine_shape` port.

`write_fake_sysfs(root, shape)` writes under `root` exactly the files `read_machine_shape` reads,
laid out and formatted as the kernel does, so `read_machine_shape(root) == shape`. Tests, the
benchmark and the bundled example node use it to stand in for a machine they do not have;
tests then edit the tree (take a CPU offline, drop the cache directories) to reach the
fallbacks real machines need.
"""

from __future__ import annotations

from pathlib import Path

from temper.host.machine import CPU_DIR, NODE_DIR
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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="ascii")
