"""The machine shape: which CPUs exist and how they share cores, caches and memory.

The planner hands out CPUs, and where a CPU sits matters as much as how many there are: two
SMT siblings share a core's execution units, the CPUs of one last-level cache (LLC) share its
capacity, and a NUMA node's CPUs share local memory. `MachineShape` is that topology as a
value, so the planner can be tested against any machine without touching one.

Invariants, checked on construction: there is at least one CPU, and each of `cores`, `llcs` and
`nodes` is a partition of `cpus` (every CPU in exactly one group). Groups are stored in one
canonical order (each sorted, groups sorted by first CPU), so equal topologies compare equal
however they were listed.

The kernel's cpulist text format ("0-3,8,10-11") is parsed and written here too: it is how
sysfs, cgroups and scx_layered's configuration spell CPU sets.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from temper.policy.errors import InputError

# No kernel supports this many CPUs (x86 caps NR_CPUS at 8192); the bound keeps a garbled
# "0-99999999999" from allocating a set of that size.
MAX_CPU_ID = 65_535

_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")

CpuGroups = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class MachineShape:
    """The CPU topology the planner works from."""

    cpus: tuple[int, ...]  # online CPU ids, sorted
    cores: CpuGroups  # SMT sibling groups
    llcs: CpuGroups  # groups of CPUs sharing a last-level cache
    nodes: CpuGroups  # NUMA nodes' CPUs

    def __post_init__(self) -> None:
        cpus = _check_cpus(self.cpus)
        object.__setattr__(self, "cpus", cpus)
        for name in ("cores", "llcs", "nodes"):
            groups = _canonical(getattr(self, name))
            _check_partition(name, groups, cpus)
            object.__setattr__(self, name, groups)

    @property
    def nr_cpus(self) -> int:
        return len(self.cpus)

    @property
    def nr_cores(self) -> int:
        return len(self.cores)

    @property
    def nr_llcs(self) -> int:
        return len(self.llcs)

    @property
    def nr_nodes(self) -> int:
        return len(self.nodes)

    @property
    def threads_per_core(self) -> int:
        """The most SMT siblings any core has: 1 when there is no SMT."""
        return max(len(core) for core in self.cores)

    def describe(self) -> str:
        """One line for an operator, e.g. "16 CPUs, 8 cores x 2 threads, 2 LLCs, 1 NUMA node"."""
        threads = _count(self.threads_per_core, "thread")
        if len({len(core) for core in self.cores}) > 1:
            threads = f"up to {threads}"
        return (
            f"{_count(self.nr_cpus, 'CPU')}, {_count(self.nr_cores, 'core')} x {threads}, "
            f"{_count(self.nr_llcs, 'LLC')}, {_count(self.nr_nodes, 'NUMA node')}"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _check_cpus(cpus: tuple[int, ...]) -> tuple[int, ...]:
    if not cpus:
        raise InputError("machine shape: there are no CPUs")
    repeated = [cpu for cpu, n in Counter(cpus).items() if n > 1]
    if repeated:
        raise InputError(f"machine shape: CPUs {format_cpu_list(repeated)} are listed twice")
    if min(cpus) < 0:
        raise InputError(f"machine shape: CPU ids must not be negative, got {min(cpus)}")
    return tuple(sorted(cpus))


def _canonical(groups: CpuGroups) -> CpuGroups:
    return tuple(sorted(tuple(sorted(group)) for group in groups))


def _check_partition(name: str, groups: CpuGroups, cpus: tuple[int, ...]) -> None:
    """Raise InputError unless every CPU of `cpus` is in exactly one of `groups`."""
    if any(not group for group in groups):
        raise InputError(f"machine shape: {name} include an empty group")
    counts = Counter(cpu for group in groups for cpu in group)
    problems = {
        "are in more than one": [cpu for cpu, n in counts.items() if n > 1],
        "are in none": sorted(set(cpus) - counts.keys()),
        "are not machine CPUs but are in one": sorted(counts.keys() - set(cpus)),
    }
    for problem, bad in problems.items():
        if bad:
            raise InputError(f"machine shape: CPUs {format_cpu_list(bad)} {problem} of the {name}")


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """The CPUs of a kernel cpulist such as "0-3,8,10-11\\n", sorted; "" is no CPUs."""
    body = text.strip()
    if not body:
        return ()
    cpus: set[int] = set()
    for item in body.split(","):
        cpus.update(_parse_range(item, text))
    return tuple(sorted(cpus))


def _parse_range(item: str, text: str) -> range:
    match = _RANGE.fullmatch(item)
    if match is None:
        raise InputError(f"CPU list {text!r}: {item!r} is not a CPU id or a range like 0-3")
    first = int(match[1])
    last = first if match[2] is None else int(match[2])
    if last < first:
        raise InputError(f"CPU list {text!r}: range {item!r} runs backwards")
    if last > MAX_CPU_ID:
        raise InputError(f"CPU list {text!r}: CPU id {last} is above {MAX_CPU_ID}")
    return range(first, last + 1)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """The kernel cpulist of `cpus`, with runs compacted: (0, 1, 2, 3, 8) -> "0-3,8"."""
    ordered = sorted(set(cpus))
    if ordered and ordered[0] < 0:
        raise InputError(f"CPU list: CPU ids must not be negative, got {ordered[0]}")
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in _runs(ordered))


def _runs(ordered: list[int]) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive ids."""
    for _, run in itertools.groupby(enumerate(ordered), key=lambda pair: pair[1] - pair[0]):
        ids = [cpu for _, cpu in run]
        yield ids[0], ids[-1]


def synthetic_shape(
    sockets: int = 1,
    cores_per_socket: int = 4,
    threads_per_core: int = 2,
    llcs_per_socket: int = 1,
) -> MachineShape:
    """A regular machine numbered as Linux numbers x86 CPUs.

    The first thread of every core, across all sockets, gets ids 0..C-1 (C cores in all), the
    second threads C..2C-1, and so on: core k's siblings are (k, k+C, ...). Each socket is one
    NUMA node, and its cores split evenly into `llcs_per_socket` LLCs.
    """
    _check_synthetic(sockets, cores_per_socket, threads_per_core, llcs_per_socket)
    total = sockets * cores_per_socket
    cores = tuple(
        tuple(core + thread * total for thread in range(threads_per_core)) for core in range(total)
    )
    return MachineShape(
        cpus=tuple(range(total * threads_per_core)),
        cores=cores,
        llcs=_merge(cores, cores_per_socket // llcs_per_socket),
        nodes=_merge(cores, cores_per_socket),
    )


def _check_synthetic(sockets: int, cores_per_socket: int, threads: int, llcs: int) -> None:
    counts = {
        "sockets": sockets,
        "cores_per_socket": cores_per_socket,
        "threads_per_core": threads,
        "llcs_per_socket": llcs,
    }
    for name, value in counts.items():
        if value < 1:
            raise InputError(f"synthetic shape: {name} must be at least 1, got {value}")
    if cores_per_socket % llcs:
        raise InputError(
            f"synthetic shape: {cores_per_socket} cores per socket do not split evenly "
            f"into {llcs} LLCs"
        )


def _merge(cores: CpuGroups, cores_per_group: int) -> CpuGroups:
    """Consecutive runs of `cores_per_group` cores, each merged into one group of CPUs."""
    return tuple(
        tuple(sorted(cpu for core in cores[i : i + cores_per_group] for cpu in core))
        for i in range(0, len(cores), cores_per_group)
    )
