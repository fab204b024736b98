"""Read the machine shape (CPUs, SMT siblings, LLCs, NUMA nodes) from sysfs under a host root.

Why sysfs: it is the kernel's own account of the topology it schedules by (lscpu and hwloc read
the same files), and it needs no tool installed on the node. Why a root argument: the agent
reads the node's `/sys` mounted at `--host-root`, and tests read a fake tree written by
`temper_testing.host.fakesys.write_fake_sysfs`.

Which files, and the fallbacks real machines need:

- `cpu/online` names the CPUs; everything else is cut down to them, because sibling and cache
  lists still name CPUs that are offline.
- `cpuN/topology/thread_siblings_list` gives the SMT siblings; kernels that dropped it keep
  `core_cpus_list`, which says the same.
- The LLC is the `cpuN/cache/index*` with level 3; a CPU without a level-3 cache (many Arm
  parts) uses its highest-level cache; a CPU without cache information (some VMs) shares one
  LLC with the rest of its NUMA node.
- `node/nodeN/cpulist` gives the NUMA nodes; a kernel without NUMA support has no `node`
  directory, and the machine is one node. Memory-only nodes (no CPUs) are left out.

Failures are translated at this edge: a missing or garbled file is a `HostReadError` naming it,
and a topology that does not add up (a CPU in two nodes) is a `HostReadError` too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from temper.host.errors import HostReadError, HostRootMissing
from temper.policy.errors import InputError
from temper.policy.machine import CpuGroups, MachineShape, parse_cpu_list

CPU_DIR = Path("sys/devices/system/cpu")
NODE_DIR = Path("sys/devices/system/node")
LLC_LEVEL = 3

_NODE_NAME = re.compile(r"node([0-9]+)")
_INDEX_NAME = re.compile(r"index([0-9]+)")
_LEVEL = re.compile(r"[0-9]+")


def read_machine_shape(root: Path) -> MachineShape:
    """The topology of the online CPUs of the host whose root directory is `root`."""
    if not root.is_dir():
        raise HostRootMissing(root)
    cpu_dir = root / CPU_DIR
    online = _read_cpus(cpu_dir / "online")
    if not online:
        raise HostReadError(cpu_dir / "online", "lists no CPUs")
    nodes = _read_nodes(root / NODE_DIR, online)
    cores = _distinct(_read_siblings(cpu_dir / f"cpu{cpu}", cpu, online) for cpu in online)
    llcs = _distinct(
        _read_llc(cpu_dir / f"cpu{cpu}", cpu, online) or _node_of(cpu, nodes) for cpu in online
    )
    try:
        return MachineShape(cpus=online, cores=cores, llcs=llcs, nodes=nodes)
    except InputError as exc:
        raise HostReadError(root / CPU_DIR.parent, f"inconsistent CPU topology: {exc}") from exc


def _read_siblings(cpu_path: Path, cpu: int, online: tuple[int, ...]) -> tuple[int, ...]:
    topology = cpu_path / "topology"
    path = topology / "thread_siblings_list"
    if not path.exists() and (topology / "core_cpus_list").exists():
        path = topology / "core_cpus_list"
    return _read_group(path, cpu, online)


def _read_llc(cpu_path: Path, cpu: int, online: tuple[int, ...]) -> tuple[int, ...] | None:
    """The online CPUs sharing `cpu`'s last-level cache; None when it has no cache info."""
    indexes = _numbered(cpu_path / "cache", _INDEX_NAME)
    levels = {index: _read_level(index / "level") for index in indexes}
    if not levels:
        return None
    llc = [index for index, level in levels.items() if level == LLC_LEVEL]
    index = llc[0] if llc else max(levels, key=levels.__getitem__)
    return _read_group(index / "shared_cpu_list", cpu, online)


def _read_nodes(node_dir: Path, online: tuple[int, ...]) -> CpuGroups:
    """The online CPUs of each NUMA node that has any; one node of all CPUs without NUMA."""
    nodes = (
        set(_read_cpus(node / "cpulist")).intersection(online)
        for node in _numbered(node_dir, _NODE_NAME)
    )
    groups = tuple(tuple(sorted(cpus)) for cpus in nodes if cpus)
    return groups or (online,)


def _node_of(cpu: int, nodes: CpuGroups) -> tuple[int, ...]:
    # A CPU in no node yields itself, so the node check in MachineShape reports it.
    return next((node for node in nodes if cpu in node), (cpu,))


def _distinct(groups: Iterable[tuple[int, ...]]) -> CpuGroups:
    return tuple(dict.fromkeys(groups))


def _numbered(parent: Path, pattern: re.Pattern[str]) -> list[Path]:
    """The entries of `parent` named by `pattern`, in numeric order; [] when it is absent."""
    if not parent.is_dir():
        return []
    try:
        entries = list(parent.iterdir())
    except OSError as exc:
        raise HostReadError(parent, f"cannot be listed: {exc}") from exc
    numbered = {
        int(match[1]): entry for entry in entries if (match := pattern.fullmatch(entry.name))
    }
    return [numbered[number] for number in sorted(numbered)]


def _read_group(path: Path, cpu: int, online: tuple[int, ...]) -> tuple[int, ...]:
    """The online CPUs listed in `path`, which must include `cpu` itself."""
    group = tuple(sorted(set(_read_cpus(path)).intersection(online)))
    if cpu not in group:
        raise HostReadError(path, f"does not list cpu{cpu} itself")
    return group


def _read_level(path: Path) -> int:
    text = _read_text(path).strip()
    if not _LEVEL.fullmatch(text):
        raise HostReadError(path, f"is not a cache level: {text!r}")
    return int(text)


def _read_cpus(path: Path) -> tuple[int, ...]:
    try:
        return parse_cpu_list(_read_text(path))
    except InputError as exc:
        raise HostReadError(path, str(exc)) from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise HostReadError(path, "is missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise HostReadError(path, f"cannot be read: {exc}") from exc
