"""The threads of the node's pods, read from `/proc`: where each last ran and how long it waited.

Finding them. A pod's processes live in its container cgroups (cgroup v2 keeps processes in
leaves only); each container's `cgroup.procs` names them and `/proc/<pid>/task/` names their
threads. The container's `cpuset.cpus.effective`, where the cpuset controller is on, says which
CPUs its threads may use: the static CPU manager narrows it, which the linter needs to see.

Reading one. `/proc/<tid>/stat` gives the thread's start time (field 22; with the tid it names
the thread, since tids are reused), its name and the CPU it last ran on (field 39);
`/proc/<tid>/schedstat` gives its time on a CPU and its time waiting on a run queue, in ns.

Cost. Opening a procfs file costs more than reading it (~75% of an open/close is descriptor set-up:
docs/performance.md#procfs-opening-costs-more-than-reading), so `ThreadReader` keeps both files of a
sampled thread open and reads them again with `pread`. A kept descriptor also cannot be confused by
tid reuse: it refers to the thread it was opened for, and reads fail with ESRCH once that thread is
gone. At most `max_open` threads keep descriptors; beyond that a read opens and closes.

Races. Threads exit and cgroups vanish between finding and reading them; each such read returns
None (or an empty list) for the caller to count (docs/reliability.md rows E1, E2). Only a
failure that is not one of these is raised, as a `HostReadError` naming the file.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from temper.host.errors import HostReadError
from temper.policy.machine import parse_cpu_list
from temper.policy.observe import ThreadStat

CGROUP_DIR = Path("sys/fs/cgroup")
# errno values that mean "it is gone": exited thread (ESRCH, ENOENT), removed cgroup (ENODEV).
GONE = frozenset({errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.ENOTDIR})
_READ_BYTES = 1024  # a stat line is ~300 bytes; comm is at most 16


@dataclass(frozen=True)
class Container:
    """One container cgroup of a pod: its name, its threads, and its CPU set if it has one."""

    name: str
    tids: tuple[int, ...]
    cpuset: tuple[int, ...] | None  # cpuset.cpus.effective; None where there is no such file


def read_pod_threads(root: Path, pod_path: str) -> tuple[Container, ...]:
    """The containers of the pod cgroup at `pod_path` (relative to the cgroup root) with their
    threads; () when the pod's cgroup is gone.

    On cgroup v2 one read of `cgroup.threads` names a container's threads; a tree without that
    file (the integration tests' fakes) is read as `cgroup.procs` and `/proc/<pid>/task/`.
    Paths are plain strings: this runs for every container every few seconds.
    """
    pod_dir = f"{root}/{CGROUP_DIR}/{pod_path.strip('/')}"
    try:
        with os.scandir(pod_dir) as entries:
            names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    except OSError as exc:
        if exc.errno in GONE:
            return ()
        raise HostReadError(Path(pod_dir), f"cannot be listed: {exc.strerror or exc}") from exc
    containers = []
    for name in names:
        directory = f"{pod_dir}/{name}"
        tids = _read_ids(f"{directory}/cgroup.threads")
        if tids is None:
            pids = _read_ids(f"{directory}/cgroup.procs") or []
            tids = [tid for pid in pids for tid in _read_tasks(f"{root}/proc/{pid}/task")]
        containers.append(Container(name, tuple(tids), _read_cpuset(directory)))
    return tuple(containers)


def _read_tasks(task_dir: str) -> list[int]:
    try:
        return [int(name) for name in os.listdir(task_dir)]
    except OSError as exc:
        if exc.errno in GONE:
            return []
        raise HostReadError(Path(task_dir), exc.strerror or str(exc)) from exc


def _read_ids(path: str) -> list[int] | None:
    """The ids listed in `path`; None when there is no such file (or its cgroup is gone)."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        return [int(line) for line in text.split()]
    except ValueError as exc:
        raise HostReadError(Path(path), "is not a list of ids") from exc


def _read_cpuset(directory: str) -> tuple[int, ...] | None:
    text = (_read_text(f"{directory}/cpuset.cpus.effective") or "").strip()
    return parse_cpu_list(text) if text else None


def _read_text(path: str) -> str | None:
    """The file's text; None when it is gone (or the controller that makes it is off)."""
    try:
        with open(path, encoding="ascii") as file:
            return file.read()
    except OSError as exc:
        if exc.errno in GONE:
            return None
        raise HostReadError(Path(path), f"cannot be read: {exc.strerror or exc}") from exc


def parse_stat(tid: int, stat: bytes, schedstat: bytes) -> ThreadStat:
    """One thread's stat and schedstat text; ValueError when either is malformed."""
    head, _, tail = stat.rpartition(b")")  # comm may hold spaces and parentheses
    fields = tail.split(maxsplit=37)  # fields[0] is field 3 (state); only up to field 39
    times = schedstat.split(maxsplit=2)
    return ThreadStat(
        tid,
        int(fields[19]),
        head[head.index(b"(") + 1 :].decode("utf-8", "replace"),
        int(fields[36]),
        int(times[0]),
        int(times[1]),
        fields[0] == b"R",
    )


def default_max_open() -> int:
    """Threads whose two files may stay open: what the process's open-file limit leaves after
    a reserve for everything else, at most 4,096 (the agent lifts its soft limit at start)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(0, min(4096, (soft - 256) // 2))


class ThreadReader:
    """Reads threads under host root `root`, keeping descriptors open for up to `max_open`."""

    def __init__(self, root: Path, max_open: int | None = None) -> None:
        self.proc = f"{root}/proc"
        self.max_open = default_max_open() if max_open is None else max_open
        self._open: dict[int, tuple[int, int]] = {}  # tid -> (stat fd, schedstat fd)

    def read(self, tid: int) -> ThreadStat | None:
        """The thread's numbers now; None when it has exited (or was never there)."""
        try:
            fds = self._open.get(tid)
            if fds is not None:
                stat, sched = os.pread(fds[0], _READ_BYTES, 0), os.pread(fds[1], _READ_BYTES, 0)
            else:
                stat, sched = self._read_once(tid)
        except OSError as exc:
            if exc.errno in GONE:
                self._close(tid)
                return None
            raise HostReadError(Path(f"{self.proc}/{tid}"), exc.strerror or str(exc)) from exc
        if not stat or not sched:  # a thread caught mid-exit reads empty
            self._close(tid)
            return None
        try:
            return parse_stat(tid, stat, sched)
        except (ValueError, IndexError) as exc:
            self._close(tid)
            raise HostReadError(Path(f"{self.proc}/{tid}/stat"), "is malformed") from exc

    def keep_only(self, tids: Collection[int]) -> None:
        """Close the descriptors of threads not in `tids` (no longer found in any pod)."""
        for tid in [t for t in self._open if t not in tids]:
            self._close(tid)

    def close(self) -> None:
        self.keep_only(())

    @property
    def open_threads(self) -> int:
        return len(self._open)

    def _read_once(self, tid: int) -> tuple[bytes, bytes]:
        base = f"{self.proc}/{tid}"
        stat_fd = os.open(f"{base}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            sched_fd = os.open(f"{base}/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(stat_fd)
            raise
        keep = len(self._open) < self.max_open
        try:
            return os.pread(stat_fd, _READ_BYTES, 0), os.pread(sched_fd, _READ_BYTES, 0)
        finally:
            if keep:
                self._open[tid] = (stat_fd, sched_fd)
            else:
                os.close(stat_fd)
                os.close(sched_fd)

    def _close(self, tid: int) -> None:
        for fd in self._open.pop(tid, ()):
            os.close(fd)
