"""A simulated Kubernetes node: kubelet's cgroup tree with real processes, for the kernel lab.

scx_layered places tasks by cgroup path and by comm. To see what it would do on a real node, the
lab (a sched_ext kernel in QEMU, docs/testing.md#the-kernel-lab) needs the tree kubelet builds, with
processes and named threads in the containers' cgroups. `SimulatedNode` builds it, systemd driver:

    kubepods.slice/                              cpu.weight from the node's allocatable CPU
      kubepods-pod<uid_>.slice/                  a Guaranteed pod: cpu.weight and cpu.max
      kubepods-burstable.slice/                  cpu.weight from the burstable pods' requests
        kubepods-burstable-pod<uid_>.slice/      a Burstable pod
          cri-containerd-<sandbox id>.scope/     the sandbox: one sleeping "pause" process
          cri-containerd-<container id>.scope/   one per container: its workload processes
      kubepods-besteffort.slice/                 cpu.weight 1 (2 shares)

and the cgroupfs driver's `kubepods/burstable/pod<uid>/<id>/` likewise. Every path comes from
`temper.policy.cgroups`, the functions the planner matches with, so the lab tests the planner's
paths rather than a copy of them.

Processes. Each container runs one `python -m temper_testing.lab.workload` process with its named
threads, plus `spin_processes` single-spinner processes (the GIL lets one process's threads keep
only one CPU busy); the sandbox runs one sleeping process named `pause`.
`temper_testing.lab.processes` places each race-free: the child waits on a pipe while its pid is
written into the container's `cgroup.procs`, so its threads are born in the container.

Real or fake root. A cgroup v2 root has `cgroup.controllers`; only then does the node enable
controllers (`cpu`, and `cpuset` when available) in `cgroup.subtree_control` at the root, the
kubepods and QoS slices and each pod, as kubelet and systemd do. Under a plain directory (the
integration tests) it writes `cpu.weight`, `cpu.max` and `cgroup.procs` as plain files and
enables nothing. Either way its bookkeeping uses only its own process handles, never what the
kernel reports, so it behaves the same on both. `close()` kills every process it started and
removes the cgroups it made, bottom-up.

Errors: `NodeError` for the cgroup tree, `WorkloadError` for its processes; both are `LabError`.

A real root without the cpu controller (a container's cgroup2 mount, where observation is
tested on the host) is refused unless `require_cpu=False`; then the tree, its processes and
their PSI files are real and no weights are written.

Not modelled: memory and pids limits, cpuset pinning (static CPU manager), pod overhead beyond
what `Pod.cpu_request_millis` carries, and kubelet's periodic resync (the burstable slice's weight
is rewritten on every `add_pod` and `remove_pod` instead).
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from temper.host.podcgroups import PROCS_FILE
from temper.policy.cgroups import CgroupDriver, container_cgroup_path, pod_cgroup_path, qos_prefix
from temper.policy.pods import Pod
from temper.policy.tiers import QosClass
from temper_testing.lab.errors import LabError
from temper_testing.lab.processes import WorkloadProcess, await_ready, kill, release, spawn_workload
from temper_testing.lab.workload import COMM_MAX_BYTES, WAKE_S, ThreadSpec, check_comm

# Kubelet's constants (pkg/kubelet/cm/helpers_linux.go).
MIN_SHARES = 2
MAX_SHARES = 262_144
SHARES_PER_CPU = 1024
MILLI_PER_CPU = 1000
MIN_QUOTA_US = 1000  # MinQuotaPeriod: kubelet never writes a smaller quota
CFS_PERIOD_US = 100_000  # kubelet's default --cpu-cfs-quota-period
MAX_WEIGHT = 10_000
SANDBOX_SHARES = 2  # containerd's defaultSandboxCPUshares for the pause container
SANDBOX_NAME = "POD"  # the sandbox's name for its id; no Kubernetes container is upper case
PAUSE_COMM = "pause"

# The kernel may still count a reaped task in its cgroup for a moment (rmdir says EBUSY).
RMDIR_RETRY_S = 2.0
CONTROLLERS = ("cpu", "cpuset")  # enabled when the root offers them; cpu is required


class NodeError(LabError):
    """The simulated node could not build, run or remove part of its tree; names the part."""


def cpu_shares(millicores: int) -> int:
    """Kubelet's `MilliCPUToShares`: millicores * 1024 / 1000, within [2, 262144].

    Zero (no request, as for a BestEffort pod) gives the minimum, 2 shares.
    """
    shares = millicores * SHARES_PER_CPU // MILLI_PER_CPU
    return min(max(shares, MIN_SHARES), MAX_SHARES)


def cpu_weight_from_shares(shares: int) -> int:
    """Kubelet's cgroup v2 `getCPUWeight`: [2, 262144] shares onto [1, 10000] linearly.

    `1 + ((shares - 2) * 9999) // 262142`, the conversion runc used before 1.3.2 as well; so
    1024 shares (one CPU) is weight 39, not the kernel's default 100. runc >= 1.3.2 and
    crun >= 1.23 convert containers' shares with a quadratic formula instead
    (opencontainers/runc#4785), while kubelet keeps the linear one for pod and QoS cgroups.
    """
    if shares < MIN_SHARES:
        raise ValueError(f"cpu shares {shares} below the minimum {MIN_SHARES}")
    if shares >= MAX_SHARES:
        return MAX_WEIGHT
    return 1 + ((shares - MIN_SHARES) * (MAX_WEIGHT - 1)) // (MAX_SHARES - MIN_SHARES)


def cpu_max(limit_millis: int | None, period_us: int = CFS_PERIOD_US) -> str:
    """The `cpu.max` kubelet writes: `"<quota> <period>"`, or `"max <period>"` without a limit.

    As kubelet's `MilliCPUToQuota`: quota = limit * period / 1000, at least 1000 us; a limit of
    None or 0 means none.
    """
    if not limit_millis:
        return f"max {period_us}"
    quota_us = max(limit_millis * period_us // MILLI_PER_CPU, MIN_QUOTA_US)
    return f"{quota_us} {period_us}"


def container_id(pod_uid: str, name: str) -> str:
    """A container's runtime id: 64 hex digits, sha256 of `<pod uid>/<name>`, so reproducible."""
    return hashlib.sha256(f"{pod_uid}/{name}".encode()).hexdigest()


def sandbox_id(pod_uid: str) -> str:
    """The pod sandbox's runtime id (the pause container's)."""
    return container_id(pod_uid, SANDBOX_NAME)


@dataclass(frozen=True)
class Thread:
    """A thread in a container's main process, named `comm` (1..15 bytes).

    A sleeping thread blocks forever; a spinning one runs a busy loop. Spinning threads of one
    process share one CPU at most (Python's GIL); use `Container.spin_processes` for more.
    """

    comm: str
    spin: bool = False

    def __post_init__(self) -> None:
        check_comm(self.comm)


@dataclass(frozen=True)
class Container:
    """A container: its CPU request and limit, its main process's threads, and spinners.

    The main process's comm is the container's name cut to 15 bytes. Each of the
    `spin_processes` extra processes has the same process comm and one spinning thread named
    `spin_comm` (default: the process comm), so together they keep that many CPUs busy.
    """

    name: str
    cpu_millis: int = 0
    cpu_limit_millis: int | None = None
    threads: tuple[Thread, ...] = ()
    spin_processes: int = 0
    spin_comm: str = ""
    wake_s: float = WAKE_S  # how often its sleeping threads wake

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name == SANDBOX_NAME:
            raise ValueError(f"container name {self.name!r}: want a name without '/', not POD")
        if self.cpu_millis < 0 or (self.cpu_limit_millis or 0) < 0 or self.spin_processes < 0:
            raise ValueError(f"container {self.name!r}: negative CPU or process count")
        if self.spin_comm:
            check_comm(self.spin_comm)

    @property
    def comm(self) -> str:
        """The process comm of this container's processes."""
        return self.name.encode()[:COMM_MAX_BYTES].decode(errors="ignore")

    @property
    def cpu_shares(self) -> int:
        """The shares kubelet gives the container: from its request, or its limit if no request."""
        return cpu_shares(self.cpu_millis or self.cpu_limit_millis or 0)

    def workload_arguments(self) -> list[list[str]]:
        """The workload command-line arguments of each of this container's processes."""
        main = [f"--comm={self.comm}", f"--wake-s={self.wake_s}"]
        main += [f"--thread={ThreadSpec(t.comm, t.spin).argument}" for t in self.threads]
        spin = ThreadSpec(self.spin_comm or self.comm, spin=True)
        spinner = [f"--comm={self.comm}", f"--thread={spin.argument}"]
        return [main] + [list(spinner) for _ in range(self.spin_processes)]


@dataclass(frozen=True)
class RunningPod:
    """A pod on the simulated node; paths are relative to the cgroup root, with a trailing '/'."""

    pod: Pod
    path: str
    containers: dict[str, list[int]]  # container name -> pids: main process first, spinners
    container_paths: dict[str, str]
    sandbox_pid: int
    sandbox_path: str

    def pids(self) -> list[int]:
        """Every process of the pod: the sandbox's pause, then each container's."""
        return [self.sandbox_pid] + [pid for pids in self.containers.values() for pid in pids]

    def thread_ids(self, proc_root: Path = Path("/proc")) -> dict[str, list[int]]:
        """comm -> sorted thread ids over the pod's processes, read from `<pid>/task/*/comm`.

        A thread that exits while being read is left out.
        """
        found: dict[str, list[int]] = {}
        for pid in self.pids():
            for tid, comm in _read_task_comms(proc_root / str(pid) / "task"):
                found.setdefault(comm, []).append(tid)
        return {comm: sorted(tids) for comm, tids in sorted(found.items())}


@dataclass
class _PodState:
    processes: list[WorkloadProcess] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)  # in creation order
    running: RunningPod | None = None


class SimulatedNode:
    """Kubelet's cgroup tree under `cgroup_root` with pods of real processes; see the module.

    `node_cpu_millis` is the node's allocatable CPU, which sets the kubepods cgroup's weight;
    by default every online CPU, as on a node without reservations.
    """

    def __init__(
        self,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        driver: CgroupDriver = CgroupDriver.SYSTEMD,
        *,
        node_cpu_millis: int | None = None,
        require_cpu: bool = True,
    ) -> None:
        self.cgroup_root = cgroup_root
        self.require_cpu = require_cpu  # False: a root without the cpu controller gets no weights
        self.driver = driver
        if node_cpu_millis is None:
            node_cpu_millis = (os.cpu_count() or 1) * MILLI_PER_CPU
        self.node_cpu_millis = node_cpu_millis
        self._controllers: tuple[str, ...] | None = None  # None until setup()
        self._slices: list[Path] = []  # made by setup(), in creation order
        self._pods: dict[str, _PodState] = {}

    @property
    def is_cgroup_fs(self) -> bool:
        """Whether the root is a real cgroup v2 root (it has `cgroup.controllers`)."""
        return (self.cgroup_root / "cgroup.controllers").is_file()

    @property
    def pods(self) -> dict[str, RunningPod]:
        """The running pods by uid, in the order they were added."""
        return {uid: s.running for uid, s in self._pods.items() if s.running is not None}

    def __enter__(self) -> SimulatedNode:
        self.setup()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def setup(self) -> None:
        """Make the kubepods and QoS slices with kubelet's weights; a no-op once done."""
        if self._controllers is not None:
            return
        self._controllers = self._read_controllers()
        try:
            self._enable_controllers(self.cgroup_root)
            kubepods = self._make_slice(_parent_path(QosClass.GUARANTEED, self.driver))
            weight = cpu_weight_from_shares(cpu_shares(self.node_cpu_millis))
            self._write_cpu(kubepods / "cpu.weight", f"{weight}\n")
            for qos in (QosClass.BURSTABLE, QosClass.BEST_EFFORT):
                self._make_slice(_parent_path(qos, self.driver))
            self._write_qos_weights()
        except BaseException as exc:
            for problem in self._remove_slices():
                exc.add_note(f"while backing out: {problem}")
            raise

    def add_pod(self, pod: Pod, containers: Sequence[Container]) -> RunningPod:
        """Make the pod's cgroups and start its sandbox and containers; back out on failure."""
        self.setup()
        names = [c.name for c in containers]
        if pod.uid in self._pods or len(set(names)) != len(names):
            raise NodeError(f"pod {pod.key} ({pod.uid}): already running, or duplicate containers")
        state = _PodState()
        try:
            running = self._build_pod(pod, containers, state)
        except BaseException as exc:
            for problem in self._teardown(state):
                exc.add_note(f"while backing out: {problem}")
            raise
        state.running = running
        self._pods[pod.uid] = state
        self._write_qos_weights()
        return running

    def remove_pod(self, uid: str) -> None:
        """Kill the pod's processes and remove its cgroups; KeyError for an unknown uid."""
        problems = self._teardown(self._pods.pop(uid))
        self._write_qos_weights()
        if problems:
            raise NodeError(f"pod {uid} not fully removed: " + "; ".join(problems))

    def close(self) -> None:
        """Kill every process started (SIGKILL, reaped), remove every cgroup made, bottom-up."""
        problems: list[str] = []
        for uid in reversed(list(self._pods)):
            problems += self._teardown(self._pods.pop(uid))
        problems += self._remove_slices()
        if problems:
            raise NodeError("simulated node not fully removed: " + "; ".join(problems))

    def _build_pod(self, pod: Pod, containers: Sequence[Container], state: _PodState) -> RunningPod:
        path = pod_cgroup_path(pod.qos, pod.cgroup_uid, self.driver)
        shares = cpu_shares(pod.cpu_request_millis)
        self._enable_controllers(self._make_cgroup(path, state, shares, pod.cpu_limit_millis))
        sandbox_path = container_cgroup_path(path, sandbox_id(pod.uid), self.driver)
        sandbox_dir = self._make_cgroup(sandbox_path, state, SANDBOX_SHARES, None)
        launches = [(sandbox_dir, [f"--comm={PAUSE_COMM}"])]
        paths = {
            c.name: container_cgroup_path(path, container_id(pod.uid, c.name), self.driver)
            for c in containers
        }
        for c in containers:
            directory = self._make_cgroup(paths[c.name], state, c.cpu_shares, c.cpu_limit_millis)
            launches += [(directory, args) for args in c.workload_arguments()]
        pids = iter(self._start(launches, state))
        sandbox_pid = next(pids)
        running = {c.name: [next(pids) for _ in c.workload_arguments()] for c in containers}
        return RunningPod(pod, path, running, paths, sandbox_pid, sandbox_path)

    def _start(self, launches: Sequence[tuple[Path, list[str]]], state: _PodState) -> list[int]:
        """Start every workload, place each in its cgroup, release them, wait until all ready."""
        started = []
        for _, args in launches:
            started.append(spawn_workload(args))
            state.processes.append(started[-1])
        for (directory, _), process in zip(launches, started, strict=True):
            self._append(directory / PROCS_FILE, process.pid)
            release(process)
        await_ready(started)
        return [process.pid for process in started]

    def _teardown(self, state: _PodState) -> list[str]:
        """Kill the pod's processes, then remove its cgroups; the problems met, if any."""
        problems = [problem for process in state.processes for problem in kill(process)]
        for directory in reversed(state.cgroups):
            problems += self._remove_cgroup(directory)
        state.processes.clear()
        state.cgroups.clear()
        return problems

    def _remove_slices(self) -> list[str]:
        """Remove the slices setup() made, bottom-up, and forget setup; the problems met."""
        problems = [
            p for directory in reversed(self._slices) for p in self._remove_cgroup(directory)
        ]
        self._slices.clear()
        self._controllers = None
        return problems

    def _read_controllers(self) -> tuple[str, ...]:
        """The controllers to enable: none under a plain directory; cpu (required) and cpuset."""
        if not self.is_cgroup_fs:
            return ()
        path = self.cgroup_root / "cgroup.controllers"
        try:
            available = path.read_text(encoding="ascii").split()
        except OSError as exc:
            raise NodeError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
        if "cpu" not in available and self.require_cpu:
            raise NodeError(f"{path}: the cpu controller is not available ({' '.join(available)})")
        return tuple(name for name in CONTROLLERS if name in available)

    def _enable_controllers(self, directory: Path) -> None:
        if self._controllers:
            enable = " ".join(f"+{name}" for name in self._controllers)
            self._write(directory / "cgroup.subtree_control", f"{enable}\n")

    def _make_slice(self, path: str) -> Path:
        """A kubepods or QoS slice, made unless it exists; only one made here is removed later."""
        directory = self.cgroup_root / path
        if not directory.is_dir():
            self._mkdir(directory)
            self._slices.append(directory)
        self._enable_controllers(directory)
        return directory

    def _make_cgroup(
        self, path: str, state: _PodState, shares: int, limit_millis: int | None
    ) -> Path:
        """A pod or container cgroup (which must not exist yet) with its CPU weight and max."""
        directory = self.cgroup_root / path.rstrip("/")
        self._mkdir(directory)
        state.cgroups.append(directory)
        self._write_cpu(directory / "cpu.weight", f"{cpu_weight_from_shares(shares)}\n")
        self._write_cpu(directory / "cpu.max", f"{cpu_max(limit_millis)}\n")
        return directory

    def _mkdir(self, directory: Path) -> None:
        try:
            directory.mkdir()
        except OSError as exc:
            raise NodeError(f"{directory}: cannot make the cgroup: {exc.strerror or exc}") from exc
        if not self.is_cgroup_fs:
            self._write(directory / PROCS_FILE, "")  # as the kernel shows one in every cgroup

    def _write_qos_weights(self) -> None:
        """Kubelet's QoS weights: BestEffort the minimum, Burstable its pods' summed requests."""
        burstable = sum(
            s.running.pod.cpu_request_millis
            for s in self._pods.values()
            if s.running is not None and s.running.pod.qos is QosClass.BURSTABLE
        )
        for qos, shares in (
            (QosClass.BURSTABLE, cpu_shares(burstable)),
            (QosClass.BEST_EFFORT, MIN_SHARES),
        ):
            directory = self.cgroup_root / _parent_path(qos, self.driver)
            self._write_cpu(directory / "cpu.weight", f"{cpu_weight_from_shares(shares)}\n")

    def _write_cpu(self, path: Path, text: str) -> None:
        """A cpu controller file: skipped on a real root without the controller."""
        if not self.is_cgroup_fs or "cpu" in (self._controllers or ()):
            self._write(path, text)

    def _write(self, path: Path, text: str) -> None:
        try:
            path.write_text(text, encoding="ascii")
        except OSError as exc:
            raise NodeError(f"{path}: cannot write {text!r}: {exc.strerror or exc}") from exc

    def _append(self, path: Path, pid: int) -> None:
        """Move `pid` into the cgroup (a plain file under a fake root just lists it)."""
        try:
            with path.open("a", encoding="ascii") as file:
                file.write(f"{pid}\n")
        except OSError as exc:
            raise NodeError(f"{path}: cannot move process {pid}: {exc.strerror or exc}") from exc

    def _remove_cgroup(self, directory: Path) -> list[str]:
        """rmdir, retrying while the kernel still counts a task; under a fake root, files first."""
        deadline = time.monotonic() + RMDIR_RETRY_S
        try:
            if not self.is_cgroup_fs:
                for entry in _files_in(directory):
                    entry.unlink(missing_ok=True)
            while True:
                try:
                    directory.rmdir()
                    return []
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                time.sleep(0.01)
        except FileNotFoundError:
            return []
        except OSError as exc:
            return [f"{directory}: cannot remove: {exc.strerror or exc}"]


def _parent_path(qos: QosClass, driver: CgroupDriver) -> str:
    """The directory (relative to the root) that holds this QoS class's pod cgroups."""
    return qos_prefix(qos, driver).rpartition("/")[0]


def _files_in(directory: Path) -> list[Path]:
    with os.scandir(directory) as entries:
        return [Path(e.path) for e in entries if e.is_file(follow_symlinks=False)]


def _read_task_comms(task_dir: Path) -> Iterator[tuple[int, str]]:
    """(tid, comm) for each thread in a `/proc/<pid>/task` directory that is still there."""
    try:
        with os.scandir(task_dir) as entries:
            tids = sorted(int(e.name) for e in entries if e.name.isdigit())
    except (FileNotFoundError, ProcessLookupError):
        return
    for tid in tids:
        try:
            comm = (task_dir / str(tid) / "comm").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        yield tid, comm.removesuffix(b"\n").decode(errors="replace")
